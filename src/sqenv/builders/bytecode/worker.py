"""Byte-compile listed `.py` files as `compileall.compile_file(path, force=True, quiet=2)` does,
taking finished `.pyc` files from a cache where an identical one was made before.

Run by the environment's own interpreter (any Python 3.8+, so no newer syntax), from this file:
its directory holds nothing that could shadow a standard module. Usage:

    python -S worker.py LISTING CACHE EPOCH JOBS MOUNT STAGING [N]

LISTING has one path a line, largest file first, at the MOUNT path as the image will have them
(and the code objects name them); the files are written by their STAGING path, where they can be
linked to and from the cache (link(2) across the bind of STAGING at MOUNT fails with EXDEV).
Without N it starts JOBS copies of itself, copy N compiling its share (`share`), all at once (like
uv's pool; no pipes: a worker fed through one would hold the next back until its pipe drained);
each prints `sqenv-bytecode TAKEN COMPILED` (pycs from the cache, pycs made) when done. `-S`: no
`.pth` file of the environment being built runs in it.

Why a cache can hold whole `.pyc` files: a pyc depends on the source's bytes, the interpreter, the
file's path (written into the code objects) and, for timestamp pycs, the source's time and size.
The path is the fixed mount path and the time is the image's fixed EPOCH (`sqenv.pack.reproducible`,
written here directly rather than patched in before packing), so the same file of the same wheel
gives the same bytes in every build: a key over all of these finds it again. An entry is only ever
added by linking a complete file, so a killed build leaves none half-written; CACHE "" means none.
"""

import errno
import hashlib
import importlib._bootstrap_external as bootstrap
import importlib.machinery
import importlib.util
import marshal
import os
import py_compile
import stat
import subprocess
import sys
import types
import warnings

VERSION = b"sqenv-pyc-1"
"""Bumped when what goes into a key or an entry changes: old entries are then never found."""


def main(argv):
    listing, cache, epoch, jobs, mount, staging = argv[1], argv[2], int(argv[3]), max(1, int(argv[4])), *argv[5:7]
    if len(argv) > 7:
        with open(listing, encoding="utf-8", errors="surrogateescape") as fh:
            paths = share([p for p in fh.read().split("\n") if p], int(argv[7]), jobs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            compiler = Compiler(cache, epoch, mount, staging)
            compiler.run(paths)
        # one write: the workers share the pipe, and print() would write the newline on its own
        os.write(1, f"sqenv-bytecode {compiler.taken} {compiler.compiled}\n".encode())
        return 0
    procs = [subprocess.Popen([sys.executable, "-S", __file__, *argv[1:7], str(n)]) for n in range(jobs)]
    return max(proc.wait() for proc in procs)


def share(paths, n, jobs):
    """Copy n's share of the listing, in its order (largest first): dealt out back and forth
    (0 1 2 2 1 0 0 1 ...), so no copy always gets the larger of each round and all end together."""
    return [path for i, path in enumerate(paths) if (i % jobs if (i // jobs) % 2 == 0 else jobs - 1 - i % jobs) == n]


class Compiler:
    def __init__(self, cache, epoch, mount, staging):
        self.cache = cache
        self.mount, self.staging = mount.rstrip("/") + "/", staging.rstrip("/") + "/"
        self.mode = py_compile._get_default_invalidation_mode()  # hash-based under SOURCE_DATE_EPOCH, as there
        self.epoch = epoch if self.mode == py_compile.PycInvalidationMode.TIMESTAMP else 0
        if self.mode == py_compile.PycInvalidationMode.TIMESTAMP and not self.epoch:
            self.cache = ""  # each pyc would name its own source's time
        self.made = set()  # directories known to exist
        self.taken = self.compiled = 0
        self.nameless = True  # new entries written as O_TMPFILE files (`store`) while that works
        self.anchor = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # makes os.link use linkat
        self.umask = os.umask(0)
        os.umask(self.umask)
        facts = (sys.implementation.cache_tag, sys.version, sys.implementation.name, sys.flags.optimize,
                 self.mode.name, self.epoch, oct(self.umask))  # fmt: skip
        interpreter = "\0".join(str(fact) for fact in facts)
        self.salt = VERSION + b"\0" + importlib.util.MAGIC_NUMBER + interpreter.encode()

    def run(self, paths):
        for path in paths:
            try:
                self.one(path)
            except (OSError, SyntaxError, UnicodeError, ValueError):
                continue  # no pyc, as compileall with quiet=2: the module compiles when imported

    def one(self, path):
        """`path` as the image has it; the files by their staging path (`real`)."""
        if not path.startswith(self.mount):
            return
        real = self.staging + path[len(self.mount) :]
        cfile = importlib.util.cache_from_source(real)
        if os.path.islink(cfile) or (os.path.exists(cfile) and not os.path.isfile(cfile)):
            return  # py_compile refuses these too
        with open(real, "rb") as fh:
            source = fh.read()
        mode = bootstrap._calc_mode(real)
        entry = None
        if self.cache:
            key = hashlib.sha256(b"\0".join([self.salt, os.fsencode(path), b"%o" % (mode & 0o666), source])).hexdigest()
            entry = os.path.join(self.cache, key[:2], key[2:] + ".pyc")
        self.ensure_dir(os.path.dirname(cfile))
        if entry is not None and self.take(entry, cfile, mode, source):
            self.taken += 1
            return
        data = self.compile(path, real, source)
        if data is None:
            return
        self.compiled += 1
        if entry is not None and self.store(entry, data, mode) and self.take(entry, cfile, mode, source, data):
            return
        bootstrap._write_atomic(cfile, data, mode)
        if entry is not None:
            self.keep(cfile, entry)

    def compile(self, path, real, source):
        loader = importlib.machinery.SourceFileLoader("<py_compile>", real)
        try:
            code = loader.source_to_code(source, path)
        except Exception:
            return None
        if self.mode == py_compile.PycInvalidationMode.TIMESTAMP:
            mtime = self.epoch or int(os.stat(real).st_mtime)
            return bootstrap._code_to_timestamp_pyc(code, mtime, len(source))
        checked = self.mode == py_compile.PycInvalidationMode.CHECKED_HASH
        return bootstrap._code_to_hash_pyc(code, importlib.util.source_hash(source), checked)

    def ensure_dir(self, path):
        if path not in self.made:
            os.makedirs(path, exist_ok=True)
            self.made.add(path)

    def take(self, entry, cfile, mode, source, made=None):
        """The cached pyc at `cfile`, hard-linked (nothing writes through it: a pyc Python replaces
        is a new file) or copied across file systems; False when there is none. It is checked
        first, and linked through the descriptor it was checked by: a regular file with the mode
        this pyc gets, this interpreter's header for this source and code that loads. Anything
        else (a crash or a full disk can leave a short file) is removed and compiled again. `made`:
        the bytes this worker just compiled for it (compared, not unmarshalled again)."""
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError:
            return self.drop(entry)  # a symlink (ELOOP), unreadable: not ours to use
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode & 0o666 & ~self.umask:
                return self.drop(entry)
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read()
            if not (data == made if made is not None else self.valid(data, source)):
                return self.drop(entry)
            try:
                self.link(f"/proc/self/fd/{fd}", cfile)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                bootstrap._write_atomic(cfile, data, mode)  # another file system: a copy
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def valid(self, data, source):
        """Whether `data` is the pyc this source compiles to here, as far as can be told without
        compiling: header (magic, kind, time and size or source hash) and code that unmarshals."""
        if len(data) <= 16 or data[:4] != importlib.util.MAGIC_NUMBER:
            return False
        flags = int.from_bytes(data[4:8], "little")
        if self.mode == py_compile.PycInvalidationMode.TIMESTAMP:
            stamp = bootstrap._pack_uint32(self.epoch) + bootstrap._pack_uint32(len(source))
            expected = flags == 0 and data[8:16] == stamp
        else:
            checked = self.mode == py_compile.PycInvalidationMode.CHECKED_HASH
            expected = flags == (0b11 if checked else 0b01) and data[8:16] == importlib.util.source_hash(source)
        if not expected:
            return False
        try:
            return isinstance(marshal.loads(memoryview(data)[16:]), types.CodeType)
        except (EOFError, ValueError, TypeError):
            return False

    def drop(self, entry):
        """A bad entry out of the cache (ours: the cache is private), so a good one takes its name."""
        try:
            os.unlink(entry)
        except OSError:
            pass
        return False

    def link(self, source, cfile):
        """linkat(AT_SYMLINK_FOLLOW) of `source` (a /proc/self/fd link: the file itself) to `cfile`,
        which a dir fd makes os.link use (plain link(2) would link the /proc symlink: EXDEV)."""
        try:
            os.link(source, cfile, src_dir_fd=self.anchor, dst_dir_fd=self.anchor)
        except FileExistsError:
            os.unlink(cfile)
            os.link(source, cfile, src_dir_fd=self.anchor, dst_dir_fd=self.anchor)

    def store(self, entry, data, mode):
        """A new entry written in the cache as a nameless file and linked in whole (another build
        may have added it first), to be linked into the build: its inode is allocated once, in
        the cache, and a killed build leaves nothing half-written. False where that cannot be
        done (no O_TMPFILE, no /proc): the pyc is then written in the build and linked into the cache."""
        if not self.nameless:
            return False
        where = os.path.dirname(entry)
        try:
            self.ensure_dir(where)
            fd = os.open(where, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, mode & 0o666)
        except (AttributeError, OSError):
            self.nameless = False
            return False
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.link(f"/proc/self/fd/{fd}", entry, src_dir_fd=self.anchor, dst_dir_fd=self.anchor)
        except FileExistsError:
            pass  # from another build: `take` checks it
        except OSError:
            self.nameless = False  # not here: written the other way from now on
            return False
        finally:
            os.close(fd)
        return True

    def keep(self, cfile, entry):
        """A new entry: the finished pyc linked in whole (another build may have added it first)."""
        try:
            self.ensure_dir(os.path.dirname(entry))
            os.link(cfile, entry)
        except OSError:
            pass  # it exists, or the cache is elsewhere: compiled again next time


if __name__ == "__main__":
    sys.exit(main(sys.argv))
