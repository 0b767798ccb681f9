"""Pack: turn a staging tree into one compressed, read-only squashfs image."""

from sqenv.pack.squashfs import Image, pack

__all__ = ["Image", "pack"]
