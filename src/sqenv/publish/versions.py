"""Versions of an install: the lock, the switch, repair, the keep window, history, rollback.

A version is a record in `sqenv.json` naming its image layers (bottom first).
The launcher names the layers new launches use, so replacing it (one rename)
is what switches versions; running programs keep the mounts they started with.
Metadata and launcher are two files, so a change goes in this order:

    1. new image renamed into place           (`vN-ID.sqfs`)
    2. metadata: the new record, `pending`    (`current` unchanged)
    3. launcher replaced                      <- the switch
    4. metadata: `current` moved, old versions beyond `keep` dropped
    5. images no kept version uses deleted

`repair` runs under the lock before every change and finishes or undoes a
sequence that a SIGKILL cut short, from the layers the launcher names. Temp
files are all called `.sqenv-update-*` and are swept there too.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

from packaging.utils import canonicalize_name

from sqenv import __version__
from sqenv.errors import PrefixError, UsageError
from sqenv.pack import Image
from sqenv.pipeline import now
from sqenv.publish import activation, header, launchers, metadata, modes
from sqenv.publish.layout import TEMP_PREFIX, Install, image_name
from sqenv.publish.lock import prefix_lock
from sqenv.publish.publisher import recover, remove_tree
from sqenv.ui import UI

DEFAULT_KEEP = 3
_IMAGE = re.compile(r"v\d+-[0-9a-f]+\.sqfs")
_OTHER_TEMPS = (".sqenv.json.",)


shared_umask = modes.shared_umask


def adopt(install: Install, path: Path, executable: bool = False) -> None:
    modes.adopt(install.prefix, path, executable)


def temp_path(install: Install, suffix: str) -> Path:
    return install.prefix / f"{TEMP_PREFIX}{secrets.token_hex(4)}{suffix}"


@contextlib.contextmanager
def locked(install: Install, ui: UI) -> Iterator[None]:
    """The prefix's lock (`publish.lock`, the one create takes too); waits for another holder.

    Under it, what a killed create left next to the prefix (a journaled swap
    to finish, hidden siblings) is completed or swept first."""
    if not os.access(install.prefix, os.W_OK | os.X_OK):
        raise PrefixError(
            f"cannot change `{install.prefix}`: permission denied",
            "ask its owner; a group can share updates when the prefix is group-writable (umask 0007)",
        )

    def waiting() -> None:
        ui.info(f"Waiting for another sqenv command that is changing {install.prefix} ...")

    with prefix_lock(install.prefix, wait=True, on_wait=waiting):
        for name in recover(install.prefix):
            ui.detail(f"removed {name}, left by an interrupted sqenv")
        yield


def launcher_layers(install: Install) -> list[str] | None:
    """The layers the launcher hands to new launches (None if unreadable)."""
    try:
        found = header.read(install.launcher)
    except OSError:
        return None
    return found.layers if "SQENV_LAYERS" in found.values else None


def by_number(data: dict, number: int) -> dict:
    for version in data["versions"]:
        if version["number"] == number and not version.get("pending"):
            return version
    kept = ", ".join(str(v["number"]) for v in data["versions"] if not v.get("pending"))
    raise UsageError(f"there is no version {number} (kept: {kept})", "see `sqenv history PREFIX`")


def kept_versions(data: dict) -> list[dict]:
    """The current version plus the newest others, `keep` in all."""
    keep = max(1, int(data.get("keep", DEFAULT_KEEP)))
    done = [v for v in data["versions"] if not v.get("pending")]
    newest = sorted(done, key=lambda v: v["number"], reverse=True)
    chosen = [v for v in newest if v["number"] == data["current"]]
    chosen += [v for v in newest if v["number"] != data["current"]][: keep - 1]
    return sorted(chosen, key=lambda v: v["number"])


def used_images(data: dict) -> set[str]:
    return {name for version in data["versions"] for name in version["layers"]}


def delete_unused(install: Install, data: dict, ui: UI) -> None:
    used = used_images(data)
    for entry in install.prefix.iterdir():
        if _IMAGE.fullmatch(entry.name) and entry.name not in used:
            ui.detail(f"removing unused image {entry.name}")
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


def sweep(install: Install, data: dict, ui: UI) -> None:
    """Remove what an interrupted update, rollback or compact left (caller holds the lock)."""
    for entry in install.prefix.iterdir():
        if entry.name.startswith(TEMP_PREFIX) or entry.name.startswith(_OTHER_TEMPS):
            ui.detail(f"removing leftover {entry.name}")
            remove_tree(entry)
    delete_unused(install, data, ui)


def switch(install: Install, version: dict) -> None:
    """Point the launcher (one rename) and the bin/ entries at a version.

    The launcher is written afresh (this sqenv's body, the site config) with
    the version's own launch settings (its record's `launch`)."""
    launchers.write(install, version["layers"], version["programs"], activate=bool(version.get("activate")),
                    options=version.get("launch"))  # fmt: skip
    with contextlib.suppress(OSError, PrefixError, KeyError):  # the activate scripts follow a moved install
        activation.write(install.prefix, install.prefix, metadata.load(install.metadata)["kind"])


def save(install: Install, data: dict) -> None:
    metadata.save(install.metadata, data, mode=modes.file_mode())


def finish(install: Install, data: dict, number: int, ui: UI) -> None:
    """Steps 4 and 5: make `number` current, keep the window, drop unused images."""
    data["current"] = number
    for version in data["versions"]:
        if version["number"] == number:
            version.pop("pending", None)
    data["versions"] = kept_versions(data)
    save(install, data)
    delete_unused(install, data, ui)


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the switch and its bookkeeping are done (a few milliseconds)."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


_TRANSIENT = ("number", "created", "change", "summary", "base", "inputs", "pending", "sqenv_version")


def new_record(base: dict, change: str, **values: object) -> dict:
    """A version record that starts as a copy of `base` (python, activate, a builder's extra keys)."""
    return {
        **{k: v for k, v in base.items() if k not in _TRANSIENT},
        "change": change,
        "base": base["number"],
        **values,
    }


def publish(install: Install, data: dict, record: dict, tmp: Path, image: Image, ui: UI, *, whole: bool) -> dict:
    """Steps 1-5 of `sqenv.publish.versions`: the new image becomes the version's top layer (`whole`: its only one)."""
    number = max(v["number"] for v in data["versions"]) + 1
    name = image_name(number, image.id)
    adopt(install, tmp)
    record.update(number=number, created=now(), sqenv_version=__version__, pending=True)
    if whole:
        record["layers"], record["images"] = [name], [image.record(name)]
    else:
        record["layers"] = [*record["layers"], name]
        record["images"] = [*record["images"], image.record(name)]
    with ui.phase(f"Publishing version {number}"), _no_interrupts():
        try:
            os.replace(tmp, install.image(name))
            data["versions"].append(record)
            save(install, data)
            switch(install, record)
        except OSError as exc:  # nothing switched: take the new version back out
            data["versions"] = [v for v in data["versions"] if v is not record]
            with contextlib.suppress(OSError):
                save(install, data)
                install.image(name).unlink()
            raise PrefixError(f"cannot write into `{install.prefix}`: {exc.strerror}; nothing was changed") from None
        try:
            finish(install, data, number, ui)
        except OSError as exc:
            ui.warn(f"version {number} is in use, but tidying up failed ({exc.strerror}); the next update retries")
    return record


def repair(install: Install, ui: UI) -> dict:
    """Finish or undo an interrupted change, sweep leftovers; return the metadata."""
    data = metadata.load(install.metadata)
    live = launcher_layers(install)
    target = next((v for v in data["versions"] if live is not None and v["layers"] == live), None)
    if target is None:
        if live is not None:
            ui.warn(f"the launcher of {install.prefix} names layers no version has; left as it is")
    elif target["number"] != data["current"] or target.get("pending"):
        ui.info(f"Completing an interrupted change: version {target['number']} is current")
        finish(install, data, target["number"], ui)
    if any(v.get("pending") for v in data["versions"]):
        ui.info("Removing the remains of an interrupted update")
        data["versions"] = [v for v in data["versions"] if not v.get("pending")]
        save(install, data)
    sweep(install, data, ui)
    return data


def history(install: Install) -> tuple[list[dict], int]:
    """The finished versions (oldest first) and the number new launches use.

    Read-only: the current version is the one the launcher names, even when
    an interrupted change has not been repaired yet."""
    data = metadata.load(install.metadata)
    live = next((v for v in data["versions"] if v["layers"] == launcher_layers(install)), None)
    versions = [v for v in data["versions"] if not v.get("pending") or v is live]
    current = live["number"] if live else data["current"]
    return sorted(versions, key=lambda v: v["number"]), current


def package_diff(old: list[dict], new: list[dict]) -> str:
    """`+requests 2.32.3, -six, idna 3.6→3.7` (empty when the package sets are equal)."""
    before = {canonicalize_name(p["name"]): p for p in old}
    after = {canonicalize_name(p["name"]): p for p in new}
    parts = [f"+{p['name']} {p['version']}" for k, p in sorted(after.items()) if k not in before]
    parts += [f"-{p['name']}" for k, p in sorted(before.items()) if k not in after]
    parts += [
        f"{p['name']} {before[k]['version']}→{p['version']}"
        for k, p in sorted(after.items())
        if k in before and before[k]["version"] != p["version"]
    ]
    return ", ".join(parts)


def switch_message(prefix: Path, to: int, was: int) -> str:
    """`Rolled back` to an older version, `Switched forward` to a newer one."""
    said = f"Rolled back {prefix} to" if to < was else f"Switched {prefix} forward to"
    return f"{said} version {to} (was {was}); running programs keep theirs"


def rollback(prefix: Path, ui: UI, to: int | None = None) -> dict:
    """Switch new launches to an older (or any kept) version; returns its record."""
    install = Install.open(prefix)
    with shared_umask(), locked(install, ui):
        data = repair(install, ui)
        current = data["current"]
        if to is None:
            older = [v["number"] for v in data["versions"] if v["number"] < current]
            if not older:
                raise UsageError(f"version {current} is the oldest version kept; nothing to roll back to")
            to = max(older)
        target = by_number(data, to)
        if to == current:
            ui.info(f"Version {to} is already current")
            return target
        missing = [name for name in target["layers"] if not install.image(name).is_file()]
        if missing:
            raise PrefixError(f"version {to} cannot be used: image {', '.join(missing)} is missing")
        with _no_interrupts():
            switch(install, target)
            data["current"] = to
            save(install, data)
    ui.info(switch_message(install.prefix, to, current))
    return target
