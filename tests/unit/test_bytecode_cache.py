"""The byte-code step's cache of finished `.pyc` files (`sqenv.builders.bytecode.worker`): what it
takes from the cache is exactly what compiling would have written, and nothing else is taken."""

from __future__ import annotations

import compileall
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sqenv.builders import bytecode
from sqenv.builders.bytecode import Compiled
from sqenv.errors import InputError
from sqenv.pack.reproducible import retime_one

EPOCH = 315532800
SOURCES = {"pkg/__init__.py": "X = 1\n", "pkg/mod.py": "def f():\n    return 2\n", "broken.py": "def (:\n"}


def tree(root: Path, sources: dict[str, str] = SOURCES) -> list[str]:
    for rel, text in sources.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return [str(root / rel) for rel in sources]


def compile_with(root: Path, cache: Path | str, files: list[str], *, jobs: int = 2, env: dict | None = None
                 ) -> Compiled:  # fmt: skip
    """The worker as `compile_site` runs it, with the tree at its own path (mount = staging)."""
    listing = root.parent / f"{root.name}.list"
    listing.write_text("".join(f + "\n" for f in files))
    clean = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "PYTHONDONTWRITEBYTECODE")}
    env = clean | (env or {})
    proc = subprocess.run([sys.executable, "-S", str(bytecode.WORKER), str(listing), str(cache), str(EPOCH), str(jobs),
                           str(root), str(root)], capture_output=True, text=True, env=env, check=True)  # fmt: skip
    counts = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("sqenv-bytecode ")]
    assert len(counts) == jobs
    return Compiled(len(files), sum(int(t) for t, _ in counts), sum(int(c) for _, c in counts))


def pycs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.pyc"))}


def test_the_pycs_are_what_compileall_and_the_pack_step_would_make(tmp_path: Path) -> None:
    root = tmp_path / "root"  # one path for both: it is written into the code objects
    tree(root)
    for path in root.rglob("*.py"):  # the old way: compileall, then the image's time stamped in
        compileall.compile_file(str(path), force=True, quiet=2)
    for pyc in root.rglob("*.pyc"):
        retime_one(pyc, EPOCH)
    theirs = pycs(root)
    shutil.rmtree(root)
    cache = tmp_path / "cache"
    done = compile_with(root, cache, tree(root))
    assert done == Compiled(files=3, taken=0, compiled=2)  # broken.py: no pyc, as with compileall
    assert pycs(root) == theirs
    assert len(theirs) == 2
    # written once, in the cache, and linked into the build (no second file, nothing to copy later)
    entries = {p.stat().st_ino for p in cache.rglob("*.pyc")}
    assert len(entries) == 2 and {p.stat().st_ino for p in root.rglob("*.pyc")} == entries


def test_a_second_build_links_them_from_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, second = tmp_path / "a" / "root", tmp_path / "b" / "root"
    compile_with(first, cache, tree(first))
    made = pycs(first)
    # the same files at the same path (the mount path, in a create): all taken, none compiled
    os.rename(first, tmp_path / "a" / "old")
    files = tree(first)
    assert compile_with(first, cache, files) == Compiled(files=3, taken=2, compiled=0)
    assert pycs(first) == made
    linked = first / "pkg" / "__pycache__" / f"mod.{sys.implementation.cache_tag}.pyc"
    assert linked.stat().st_ino in {p.stat().st_ino for p in cache.rglob("*.pyc")}  # the cache's entry, no copy
    # another path is other code (the path is in the code objects): compiled, not taken
    assert compile_with(second, cache, tree(second)) == Compiled(files=3, taken=0, compiled=2)


def test_a_changed_source_or_interpreter_setting_is_compiled_again(tmp_path: Path) -> None:
    cache, root = tmp_path / "cache", tmp_path / "root"
    compile_with(root, cache, tree(root))
    changed = tree(root, {**SOURCES, "pkg/mod.py": "def f():\n    return 3\n"})
    assert compile_with(root, cache, changed) == Compiled(files=3, taken=1, compiled=1)
    env = {"PYTHONDONTWRITEBYTECODE": "1", "SOURCE_DATE_EPOCH": "0"}  # hash-based pycs, as compileall makes then
    assert compile_with(root, cache, changed, env=env) == Compiled(files=3, taken=0, compiled=2)
    head = (root / "pkg" / "__pycache__" / f"mod.{sys.implementation.cache_tag}.pyc").read_bytes()[4:8]
    assert head != b"\0\0\0\0"


def test_without_a_cache_everything_is_compiled(tmp_path: Path) -> None:
    root = tmp_path / "root"
    files = tree(root)
    assert compile_with(root, "", files, jobs=1) == Compiled(files=3, taken=0, compiled=2)
    assert compile_with(root, "", files, jobs=1) == Compiled(files=3, taken=0, compiled=2)
    assert not (tmp_path / "cache").exists()


def test_a_cache_others_can_write_to_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone could plant byte code in it
    monkeypatch.setenv("SQENV_CACHE_DIR", str(shared / "sqenv"))
    monkeypatch.delenv("SQENV_BYTECODE_CACHE", raising=False)
    with pytest.raises(InputError, match=r"byte-code cache .* is not safe to use: every user may rename what is in"):
        bytecode.cache_of(None)  # type: ignore[arg-type]
    monkeypatch.setenv("SQENV_BYTECODE_CACHE", "0")
    assert bytecode.cache_of(None) is None  # type: ignore[arg-type]


def worker_module():
    spec = importlib.util.spec_from_file_location("sqenv_bytecode_worker", bytecode.WORKER)
    assert spec and spec.loader
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    return worker


def test_the_workers_deal_the_files_back_and_forth_largest_first() -> None:
    """Given largest first, each worker's share is as big as the others' (a static interleave gave
    the first worker the larger file of every round: it finished last, alone, on a CPU of two)."""
    share = worker_module().share
    files = list(range(10))
    assert share(files, 0, 2) == [0, 3, 4, 7, 8]
    assert share(files, 1, 2) == [1, 2, 5, 6, 9]
    assert share(files, 2, 3) == [2, 3, 8, 9]
    assert sorted(f for n in range(3) for f in share(files, n, 3)) == files  # each once
    sizes = sorted((1000 - 7 * i for i in range(100)), reverse=True)
    totals = [sum(share(sizes, n, 4)) for n in range(4)]
    assert max(totals) - min(totals) <= sizes[0] - sizes[3]  # one round's spread (interleaved: 25 rounds')


def test_new_entries_are_written_as_nameless_files_linked_in_whole(tmp_path: Path) -> None:
    """O_TMPFILE + linkat through /proc: the pyc's inode is made in the cache, once (the other way,
    writing it in the build first, is what file systems without O_TMPFILE get)."""
    worker = worker_module()
    compiler = worker.Compiler(str(tmp_path / "cache"), EPOCH, str(tmp_path), str(tmp_path))
    entry = tmp_path / "cache" / "ab" / "cdef.pyc"
    assert compiler.store(str(entry), b"pyc bytes", 0o644)
    assert compiler.nameless
    assert entry.read_bytes() == b"pyc bytes" and entry.stat().st_nlink == 1
    assert compiler.store(str(entry), b"pyc bytes", 0o644)  # another build's: kept as it is
    assert sorted(p.name for p in entry.parent.iterdir()) == ["cdef.pyc"]  # nothing else left there


@pytest.mark.parametrize("damage", ["truncated", "garbage", "fifo", "read-only", "symlink"])
def test_a_damaged_entry_is_compiled_again_and_replaced(tmp_path: Path, damage: str) -> None:
    """A crash or a full disk can leave a short entry, a user can chmod the cache: such an entry
    is never linked into an image (which would break an import, or change the image's modes)."""
    cache, root = tmp_path / "cache", tmp_path / "root"
    compile_with(root, cache, tree(root), jobs=1)
    good = pycs(root)
    entry = max(cache.rglob("*.pyc"), key=lambda p: p.stat().st_size)
    data = entry.read_bytes()
    entry.unlink()
    if damage == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        entry.write_bytes(data[:16] + b"\xff" * (len(data) - 16))
    elif damage == "fifo":
        os.mkfifo(entry)  # would block a plain open() for ever
    elif damage == "read-only":
        entry.write_bytes(data)
        entry.chmod(0o444)
    else:
        (tmp_path / "elsewhere.pyc").write_bytes(data)
        entry.symlink_to(tmp_path / "elsewhere.pyc")
    os.rename(root, tmp_path / "old")
    assert compile_with(root, cache, tree(root), jobs=1) == Compiled(files=3, taken=1, compiled=1)
    assert pycs(root) == good
    assert entry.is_file() and not entry.is_symlink() and entry.read_bytes() == data  # replaced
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in root.rglob("*.pyc"))
