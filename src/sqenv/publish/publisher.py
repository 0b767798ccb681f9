"""Crash-safe publication of a new install.

Everything is written into a hidden sibling `.NAME.sqenv-new-XXXXXXXX` of
PREFIX (same file system, so the image is written once and never copied),
under the prefix's lock (`publish.lock`), then put in place:

- PREFIX absent: one rename.
- PREFIX an empty directory or an sqenv install (`--force`): one
  `renameat2(RENAME_EXCHANGE)`, so at every instant PREFIX is the old or the
  new install; the sibling then holds the old tree, which is removed. Where
  the file system has no exchange, a journal `.NAME.sqenv-journal` names
  the two siblings before the two renames, and the next sqenv command of
  that prefix completes it (`recover`).

`--force` replaces only an empty directory or an install made of exactly what
sqenv writes (`replaceable`); anything else is refused, and checked again at
the commit, so what a post-install script wrote into PREFIX is never deleted.
Under the lock, `recover` also sweeps the siblings a killed run left: only
directories of ours with sqenv's own names, never through a symlink.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from types import TracebackType

from sqenv.errors import PrefixError
from sqenv.publish.activation import SCRIPTS as ACTIVATION_SCRIPTS
from sqenv.publish.layout import PROGRAM_LINKS
from sqenv.publish.lock import prefix_lock
from sqenv.publish.modes import file_mode, fix_dir

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_LAUNCHER_HEAD = "#!/bin/sh\n# Launcher written by sqenv"
_IMAGE = re.compile(r"v\d+-[0-9a-f]+\.sqfs")
_SQENV_TEMPS = (".sqenv-update-", ".sqenv.json.", ".container.sif.new")
_SQENV_FILES = ("sqenv-enter", "container.sif", "pyvenv.cfg")


def _owner(path: Path) -> str:
    """`name (uid N)` of whoever owns `path` (without following a symlink)."""
    import pwd

    try:
        uid = os.lstat(path).st_uid
    except OSError:
        return "nobody (it is gone)"
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def remove_tree(path: Path) -> None:
    """rm -rf that also removes trees with read-only or mode-000 directories
    (installed packages have some; so does overlayfs's work directory)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    if not path.exists():
        return
    try:
        shutil.rmtree(path)
        return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    for root, dirs, _files in os.walk(path):  # top-down: each directory is opened after its chmod
        for name in dirs:
            full = os.path.join(root, name)
            if os.path.islink(full):  # lib64 -> lib: os.walk lists it among dirs; never chmod through it
                continue
            with contextlib.suppress(OSError):
                os.chmod(full, 0o700)
    shutil.rmtree(path)


def _is_launcher(path: Path) -> bool:
    try:
        with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW | os.O_NONBLOCK)) as fh:
            return stat.S_ISREG(os.fstat(fh.fileno()).st_mode) and fh.read(64).decode(errors="replace").startswith(
                _LAUNCHER_HEAD
            )
    except OSError:
        return False


def _is_metadata(path: Path) -> bool:
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 64 << 20:
            return False
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "format" in data and isinstance(data.get("versions"), list)


def foreign_entries(prefix: Path) -> list[str]:
    """What in `prefix` sqenv did not write (empty: an sqenv install, or an empty directory).

    An install is recognised by its `sqenv.json` and `launcher` as sqenv
    writes them; besides those it may hold only sqenv-enter, images, container.sif, pyvenv.cfg,
    an empty `lib/`, `bin/` of symlinks to ../launcher and the activation scripts, and sqenv's
    temp files."""
    names = sorted(os.listdir(prefix))
    if not names:
        return []
    if not (_is_metadata(prefix / "sqenv.json") and _is_launcher(prefix / "launcher")):
        return names
    foreign = []
    for name in names:
        path = prefix / name
        st = os.lstat(path)
        if name in ("sqenv.json", "launcher"):
            continue
        if stat.S_ISREG(st.st_mode) and (
            name in _SQENV_FILES or _IMAGE.fullmatch(name) or name.startswith(_SQENV_TEMPS)
        ):
            continue
        if name == "lib" and stat.S_ISDIR(st.st_mode) and not os.listdir(path):  # venvcfg.guard_lib
            continue
        if name == "bin" and stat.S_ISDIR(st.st_mode):
            strays = [e for e in os.listdir(path) if not _sqenv_bin_entry(path / e)]
            foreign += [f"bin/{e}" for e in sorted(strays)]
            continue
        foreign.append(name)
    return foreign


def _sqenv_bin_entry(path: Path) -> bool:
    """A launcher symlink, or one of the activation scripts sqenv writes beside them (regular files)."""
    if path.is_symlink():
        return os.readlink(path) in PROGRAM_LINKS
    return path.name in ACTIVATION_SCRIPTS and stat.S_ISREG(os.lstat(path).st_mode)


def _listing(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_prefix(prefix: Path, force: bool) -> None:
    """Fail early, before any build, when PREFIX cannot be published to."""
    text = str(prefix)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PrefixError(
            f"the prefix `{text.encode('utf-8', 'backslashreplace').decode()}` is not valid UTF-8",
            "choose a prefix path made of UTF-8 characters (launchers and metadata record it as text)",
        ) from None
    if any(c in text for c in "\n\r\0"):
        raise PrefixError(
            f"the prefix {text!r} contains a line break", "choose a prefix path without control characters"
        )
    if prefix.is_symlink() or (prefix.exists() and not prefix.is_dir()):
        raise PrefixError(f"`{prefix}` exists and is not a directory", "choose another prefix, or remove it yourself")
    if prefix.is_dir():
        try:
            foreign = foreign_entries(prefix)
            names = os.listdir(prefix)
        except OSError as exc:
            raise PrefixError(f"cannot read `{prefix}`: {exc.strerror}") from None
        if names and not force:
            raise PrefixError(
                f"`{prefix}` exists and is not empty",
                "choose another prefix, or pass `--force` to replace an sqenv install",
            )
        if foreign:
            raise PrefixError(
                f"`{prefix}` is not an sqenv install: it holds {_listing(foreign)}; `--force` replaces only "
                "sqenv installs and empty directories",
                "choose another prefix, or move or remove that directory yourself",
            )
    parent = prefix.parent
    if not parent.is_dir():
        raise PrefixError(f"the parent directory `{parent}` does not exist", f"create it first: `mkdir -p {parent}`")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PrefixError(
            f"cannot write to `{parent}` (permission denied)", "choose a prefix in a directory you can write to"
        )


# ------------------------------------------------------------------ the swap


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False when this libc or file system cannot."""
    if os.environ.get("SQENV_TEST_NO_RENAME_EXCHANGE"):  # tests: take the journal path
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def sibling_pattern(prefix: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(prefix.name)}\.sqenv-(new|old)-[0-9a-f]{{8}}")


def journal_path(prefix: Path) -> Path:
    return prefix.parent / f".{prefix.name}.sqenv-journal"


def _ours(path: Path, kind: int) -> bool:
    """Made by us: of this type, owned by this user, not a symlink."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.getuid()


def recover(prefix: Path) -> list[str]:
    """Under the prefix's lock: finish an interrupted journaled swap, then sweep
    the hidden siblings killed runs left. Returns what was removed."""
    prefix = prefix.absolute()
    journal = journal_path(prefix)
    pattern = sibling_pattern(prefix)
    if _ours(journal, stat.S_IFREG):
        try:
            names = json.loads(journal.read_text())
            old, new = prefix.parent / names["old"], prefix.parent / names["new"]
            valid = pattern.fullmatch(old.name) and pattern.fullmatch(new.name)
        except (OSError, ValueError, KeyError, TypeError):
            valid = False
        if valid and not os.path.lexists(prefix):
            # killed between the two renames: the new install goes into place (else the old one back)
            for candidate in (new, old):
                if _ours(candidate, stat.S_IFDIR):
                    os.rename(candidate, prefix)
                    break
        journal.unlink()
    half = journal.with_name(journal.name + ".tmp")
    if _ours(half, stat.S_IFREG):
        half.unlink()
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.listdir(prefix.parent):
            path = prefix.parent / entry
            if pattern.fullmatch(entry) and _ours(path, stat.S_IFDIR):
                remove_tree(path)
                removed.append(entry)
    return removed


class Publisher:
    """`with Publisher(prefix, force) as staging_dir: ...; publisher.commit()`.

    Entering takes the prefix's lock (another create of the same prefix fails
    with "another sqenv is creating PREFIX"), completes what a killed run
    left, and makes the sibling; leaving removes an uncommitted sibling and
    releases the lock."""

    def __init__(self, prefix: Path, force: bool = False) -> None:
        self.prefix = prefix.absolute()
        self.force = force
        check_prefix(self.prefix, force)
        self.tmp = self.prefix.parent / f".{self.prefix.name}.sqenv-new-{secrets.token_hex(4)}"
        self.committed = False
        self._lock = prefix_lock(self.prefix, wait=False, doing="creating")

    def __enter__(self) -> Path:
        self._lock.__enter__()
        try:
            recover(self.prefix)
            check_prefix(self.prefix, self.force)  # again, now that nobody else can change it
            try:
                self.tmp.mkdir()
                fix_dir(self.tmp)
            except OSError as exc:
                raise PrefixError(f"cannot create files next to `{self.prefix}`: {exc.strerror}") from None
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self.tmp

    def _check_unchanged(self) -> None:
        """What sqenv may replace is still all there is: nothing was written into PREFIX meanwhile."""
        if not self.prefix.is_dir() or self.prefix.is_symlink():
            if os.path.lexists(self.prefix):
                raise PrefixError(f"`{self.prefix}` was replaced by a file during the build; it is left as it is")
            return
        foreign = foreign_entries(self.prefix)
        if not foreign and (self.force or not os.listdir(self.prefix)):
            return
        raise PrefixError(
            f"something wrote into `{self.prefix}` during the build ({_listing(foreign)}); it is kept and "
            "nothing was installed",
            "a post-install script must write into the environment (`$SQENV_BUILD_PREFIX`) to have it in the "
            "image; move those files elsewhere, then retry",
        )

    def commit(self) -> None:
        """Put the finished install into place: PREFIX is the old or the new install at every instant."""
        self._check_unchanged()
        if not os.path.lexists(self.prefix):
            os.rename(self.tmp, self.prefix)
            self.committed = True
            return
        if _renameat2_exchange(self.tmp, self.prefix):
            self.committed = True
            remove_tree(self.tmp)  # now the old install (or empty directory)
            return
        old = self.prefix.parent / f".{self.prefix.name}.sqenv-old-{secrets.token_hex(4)}"
        journal = journal_path(self.prefix)
        tmp = journal.with_name(journal.name + ".tmp")
        try:
            tmp.unlink(missing_ok=True)
            with open(tmp, "x", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW, 0o600)) as fh:
                json.dump({"old": old.name, "new": self.tmp.name}, fh)
            os.chmod(tmp, file_mode())
            os.rename(tmp, journal)
        except OSError as exc:  # another user's file there (a shared, sticky parent): PREFIX is untouched
            planted = tmp if os.path.lexists(tmp) else journal
            raise PrefixError(
                f"cannot write the journal `{planted}`: {exc.strerror} (it belongs to {_owner(planted)})",
                f"sqenv did not make it: ask its owner to remove `{planted}`, then retry",
            ) from None
        os.rename(self.prefix, old)
        os.rename(self.tmp, self.prefix)
        self.committed = True
        journal.unlink()
        remove_tree(old)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if not self.committed:
                remove_tree(self.tmp)
        finally:
            self._lock.__exit__(None, None, None)
