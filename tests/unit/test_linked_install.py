"""When a pip create lets uv hard-link from its cache, and which files it then byte-compiles."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from sqenv.builders import bytecode
from sqenv.builders.base import BuildContext
from sqenv.builders.uv import linked_install, same_file_system
from sqenv.inputs import BuildSpec, PipInputs
from sqenv.ui import UI


def context(tmp_path: Path, **spec_fields) -> BuildContext:
    staging = tmp_path / "work" / "root"
    staging.mkdir(parents=True, exist_ok=True)
    spec = BuildSpec(prefix=tmp_path / "env", kind="pip", pip=PipInputs(packages=("six",)), **spec_fields)
    return BuildContext(spec=spec, staging=staging, workdir=staging.parent, enter=Path("/bin/true"), ui=UI(),
                        cwd=tmp_path)  # fmt: skip


@pytest.fixture
def cache_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """uv's cache on the staging directory's file system (not created yet, as on a first run)."""
    cache = tmp_path / "home" / ".cache" / "uv"
    monkeypatch.setenv("UV_CACHE_DIR", str(cache))
    monkeypatch.delenv("UV_NO_CACHE", raising=False)
    return cache


def test_a_plain_pip_create_links(tmp_path: Path, cache_here: Path) -> None:
    assert linked_install(context(tmp_path))


def test_copies_where_linking_could_harm_or_cannot_work(
    tmp_path: Path, cache_here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "post.sh"
    script.write_text("true\n")
    assert not linked_install(context(tmp_path, post_install=script))  # it may rewrite files in place
    ctx = context(tmp_path)
    assert not linked_install(dataclasses.replace(ctx, mode="update"))  # an overlay
    assert not linked_install(dataclasses.replace(ctx, mounts=("-l", "/x")))
    sys_site = dataclasses.replace(ctx.spec, pip=PipInputs(packages=("six",), system_site_packages=True))
    assert not linked_install(dataclasses.replace(ctx, spec=sys_site))
    monkeypatch.setenv("UV_NO_CACHE", "1")
    assert not linked_install(ctx)


def test_same_file_system_looks_at_the_nearest_existing_parent(tmp_path: Path) -> None:
    assert same_file_system(tmp_path / "not" / "yet", tmp_path)
    assert not same_file_system(Path("/proc/self"), tmp_path)


def test_compiles_the_python_files_of_the_distributions_added(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    for name, record in (
        ("pip-24.0.dist-info", "pip/__init__.py,sha256=x,1\n"),
        ("six-1.16.0.dist-info", "six.py,sha256=x,1\nsix-1.16.0.dist-info/RECORD,,\n"),
        ("cowsay-6.1.dist-info", "cowsay/__init__.py,,\ncowsay/__pycache__/x.cpython-311.pyc,,\n"
                                 "../../../bin/cowsay,,\ncowsay/data.txt,,\ncowsay/gone.py,,\n"),
    ):  # fmt: skip
        (site / name).mkdir(parents=True)
        (site / name / "RECORD").write_text(record)
    for rel in ("pip/__init__.py", "six.py", "cowsay/__init__.py", "cowsay/data.txt"):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text("")
    assert bytecode.dist_infos(site) == {"pip-24.0.dist-info", "six-1.16.0.dist-info", "cowsay-6.1.dist-info"}
    assert bytecode.sources_of(site, "six-1.16.0.dist-info") == [(1, "six.py")]  # with RECORD's size
    assert bytecode.sources_of(site, "cowsay-6.1.dist-info") == [(0, "cowsay/__init__.py"), (0, "cowsay/gone.py")]
    assert bytecode.sources_of(site, "missing.dist-info") == []
    (site / "odd-1.dist-info").mkdir()
    (site / "odd-1.dist-info" / "RECORD").write_text('"odd/a,b.py",sha256=x,3\r\nodd/c.py,,7\r\n')
    assert bytecode.sources_of(site, "odd-1.dist-info") == [(3, "odd/a,b.py"), (7, "odd/c.py")]  # csv quoting
    assert bytecode.dist_infos(None) == set()


def test_compiles_with_one_worker_per_cpu_this_process_may_use() -> None:
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})
        assert bytecode.cpus() == 1  # a Slurm job's share, not the node's cores
    finally:
        os.sched_setaffinity(0, allowed)
    assert bytecode.cpus() == len(allowed)
