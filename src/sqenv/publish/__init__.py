"""Publish: put an image, its launchers and metadata into the prefix, atomically."""
