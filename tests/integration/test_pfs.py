"""The simulated parallel file system (tests/infra/pfs): what programs see through a node's
client is what the backing directory holds, errors included, and the metadata server counts
exactly the requests a Lustre client would send (per node, cached names, uncached opens)."""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import BASE_PYTHON, User, ok, run

pfs = pytest.importorskip("pfs")  # tests/infra is on sys.path (conftest)
sys.path.insert(0, str(Path(pfs.__file__).parent))
import mds as mds_module  # noqa: E402  (the server's own modules, as it runs them)
import model as model_module  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting the simulated file system needs root")


@pytest.fixture(scope="module")
def fs(tmp_path_factory: pytest.TempPathFactory):
    """One backing directory, its metadata server and one node's client mounted elsewhere."""
    base = Path("/var/tmp") / f"sqenv-pfs-test-{uuid.uuid4().hex[:8]}"
    base.mkdir(mode=0o755)
    backing, mnt = base / "backing", base / "mnt"
    backing.mkdir(mode=0o755)
    mnt.mkdir()
    mds = pfs.MDS(backing, pfs.Params(rtt_s=0, service_s=0, threads=4))
    client = pfs.Client(mds, backing, mnt, "node1")
    yield backing, mnt, mds
    client.stop()
    mds.stop()
    import shutil

    shutil.rmtree(base)


# ---------------------------------------------------------------- contents and errors
names = st.text(alphabet="abcxyz._-é", min_size=1, max_size=6).filter(lambda n: n not in (".", ".."))
tree = st.recursive(
    st.one_of(
        st.tuples(st.just("file"), st.binary(max_size=20000), st.sampled_from([0o644, 0o755, 0o600, 0o000])),
        st.tuples(st.just("link"), st.sampled_from(["f0", "../f0", "nope", "d0/f1", "d0", "."])),
    ),
    lambda children: st.tuples(st.just("dir"), st.dictionaries(names, children, max_size=5)),
    max_leaves=12,
)


def build(path: Path, node) -> None:
    kind = node[0]
    if kind == "file":
        path.write_bytes(node[1])
        path.chmod(node[2])
    elif kind == "link":
        path.symlink_to(node[1])
    else:
        path.mkdir()
        for name, child in node[1].items():
            build(path / name, child)


def observe(path: str, write: bool = False) -> list:
    """Everything a program can learn about one path, errors as errno names (and, with
    ``write``, what an attempt to write it gives)."""
    out: list = []
    steps = (
        ("lstat", lambda: _attrs(os.lstat(path))),
        ("stat", lambda: _attrs(os.stat(path))),
        ("readlink", lambda: os.readlink(path)),
        ("listdir", lambda: sorted(os.listdir(path))),
        ("read", lambda: Path(path).read_bytes().hex()),
        ("write", lambda: open(path, "ab").close()),
    )
    for what, fn in steps if write else steps[:-1]:
        try:
            out.append((what, fn()))
        except OSError as e:
            out.append((what, errno.errorcode[e.errno]))
    return out


def _attrs(s: os.stat_result) -> tuple:
    return (stat.filemode(s.st_mode), s.st_size, s.st_nlink, s.st_uid, s.st_gid, s.st_mtime_ns)


def probes(root: Path) -> list[str]:
    """Every path in the tree, plus missing names, names below files and below links."""
    out = [""]
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel
        for n in dirnames + filenames:
            p = os.path.join(rel, n)
            out += [p, os.path.join(p, "missing"), os.path.join(p, "f0")]
    return [*out, "missing", "missing/deeper"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(top=st.dictionaries(names, tree, min_size=1, max_size=5))
def test_contents_and_errors_match_the_backing_directory(fs, top) -> None:
    backing, mnt, _ = fs
    case = f"case-{uuid.uuid4().hex[:12]}"  # fresh names: the node's caches never go stale
    build(backing / case, ("dir", top))
    for rel in probes(backing / case):
        # writing is refused on the (read-only) simulated file system: compare the rest
        want = observe(str(backing / case / rel))
        got = observe(str(mnt / case / rel), write=True)
        assert got[:-1] == want, rel
        assert got[-1][1] in ("EROFS", "ENOENT", "ENOTDIR", "EISDIR", "ELOOP"), (rel, got[-1])


SCRIPT = r"""
import errno, json, os, sys
out = {}
for p in sys.argv[1:]:
    row = []
    for what, fn in (("stat", os.stat), ("open", lambda q: os.close(os.open(q, os.O_RDONLY))), ("listdir", os.listdir)):
        try:
            fn(p)
            row.append("ok")
        except OSError as e:
            row.append(errno.errorcode[e.errno])
    out[p] = row
print(json.dumps(list(out.values())))
"""


def test_permission_errors_match_for_an_ordinary_user(fs, user: User) -> None:
    backing, mnt, _ = fs
    case = f"perm-{uuid.uuid4().hex[:12]}"
    (backing / case).mkdir(mode=0o755)
    (backing / case / "secret").write_text("x")
    (backing / case / "secret").chmod(0o600)
    (backing / case / "closed").mkdir(mode=0o700)
    (backing / case / "closed" / "f").write_text("x")
    (backing / case / "noread").mkdir(mode=0o711)
    (backing / case / "noread" / "f").write_text("x")
    rels = ["secret", "closed", "closed/f", "noread", "noread/f"]

    def as_user(root: Path) -> list:
        cp = ok(run([BASE_PYTHON, "-c", SCRIPT, *[str(root / case / r) for r in rels]], user=user))
        return json.loads(cp.stdout)

    want = as_user(backing)
    assert want[0][1] == "EACCES" and want[2][0] == "EACCES"  # the case exercises permissions
    assert as_user(mnt) == want


# ---------------------------------------------------------------- op counting
def test_ops_are_counted_exactly_per_node(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = Path("/var/tmp") / f"sqenv-pfs-count-{uuid.uuid4().hex[:8]}"
    base.mkdir(mode=0o755)
    backing, m1, m2 = base / "backing", base / "m1", base / "m2"
    for d in (backing, m1, m2):
        d.mkdir()
    (backing / "a" / "b").mkdir(parents=True)
    (backing / "a" / "b" / "f").write_bytes(b"x" * 10000)
    (backing / "a" / "link").symlink_to("b/f")
    try:
        with pfs.MDS(backing, pfs.Params(rtt_s=50e-6, service_s=100e-6, threads=2)) as mds:
            n1 = pfs.Client(mds, backing, m1, "node1")
            n2 = pfs.Client(mds, backing, m2, "node2")
            for _ in range(2):  # the second round is served from node1's caches, except opens
                os.stat(m1 / "a" / "b" / "f")  # lookup a, b, f (then cached)
                assert (m1 / "a" / "b" / "f").read_bytes() == b"x" * 10000  # open + close
                assert sorted(os.listdir(m1 / "a")) == ["b", "link"]  # opendir, readdir once, closedir
                with pytest.raises(FileNotFoundError):
                    os.stat(m1 / "a" / "zz")  # a negative lookup, cached
                # "link" came with the listing (readdirplus): no lookup, one readlink
                assert os.readlink(m1 / "a" / "link") == "b/f"
            os.stat(m2 / "a" / "b" / "f")  # node2 has caches of its own
            n1.stop()
            n2.stop()
            stats = mds.stats()
    finally:
        import shutil

        shutil.rmtree(base)
    # each mount asks for its root's attributes once
    assert stats["ops"] == {
        "node1": {
            "getattr": 1,
            "lookup": 4,
            "open": 2,
            "close": 2,
            "opendir": 2,
            "readdir": 1,
            "closedir": 2,
            "readlink": 1,
        },
        "node2": {"getattr": 1, "lookup": 3},
    }
    assert stats["errors"] == {"node1": {"lookup": 1}}
    assert stats["reports"]["node1"]["bytes_read"] == 10000  # the second read hit the page cache
    assert stats["reports"]["node2"]["bytes_read"] == 0
    assert pfs.total_ops(stats)["lookup"] == 7


def test_latency_model_serves_in_order_on_its_threads() -> None:
    """The queueing arithmetic itself (no clocks): 2 slots, 1 s service, 0.2 s RTT."""
    lat = mds_module.Latency(model_module.Params(rtt_s=0.2, service_s=1.0, threads=2))
    due = [lat.reply_due(0.0) for _ in range(5)]
    assert due == pytest.approx([1.2, 1.2, 2.2, 2.2, 3.2])
    assert lat.busy_s == pytest.approx(5.0)
    assert lat.max_wait_s == pytest.approx(2.0)
    assert lat.reply_due(10.0) == pytest.approx(11.2)  # an idle server: RTT + service
