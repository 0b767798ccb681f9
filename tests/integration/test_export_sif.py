"""Issue 15: `sqenv export --sif`, provenance inside images, `cotainr build`, against a real Apptainer.

Everything runs as an ordinary user (tests/infra/apptainer.py: apptainer from a debootstrapped
root through bwrap), in a directory under /var/tmp the shim shows apptainer. Apptainer binds
/tmp, /var/tmp and $HOME into containers, so inside a SIF the PREFIX of an install made under
/var/tmp is hidden and programs run from /mnt/sqenv; `--no-mount tmp` shows the SIF's own PREFIX.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apptainer import Apptainer, run_as  # tests/infra, on sys.path through tests/conftest.py
from apptainer import env_for as apptainer_env

from support import BASE_PYTHON, SQENV, owned_dir

pytestmark = pytest.mark.apptainer
NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


@pytest.fixture(scope="module")
def user(app: Apptainer) -> str:
    return app.ensure_user("sqapp")


@pytest.fixture(scope="module")
def work(user: str) -> Iterator[Path]:
    pw = pwd.getpwnam(user)
    with owned_dir("sqenv-export-tests", pw.pw_uid, pw.pw_gid) as path:
        yield path


def env_for(extra: dict[str, str] | None = None) -> dict[str, str]:
    return apptainer_env({**NO_PROXY, **(extra or {})})


def run(app: Apptainer, user: str, argv: list, *, env: dict | None = None, cwd: Path | None = None, **kw):
    return run_as(app, user, argv, env={**NO_PROXY, **(env or {})}, cwd=cwd, **kw)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("error: "), proc.stderr
    for word in words:
        assert word in first, proc.stderr


@pytest.fixture(scope="module")
def channel(work: Path, user: str) -> str:
    import conda_channel

    uri = conda_channel.build_channel(work / "channels").as_uri()
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(work / "channels"):
        for name in [*dirs, *files, "."]:
            os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)
    return uri


@pytest.fixture(scope="module")
def conda_env(app, user, work, channel) -> Path:
    yml = work / "env.yml"
    yml.write_text(f"channels: [{channel}]\ndependencies: [sqpython, sqbin]\nvariables:\n  MYVAR: from-yml\n")
    prefix = work / "conda-env"
    argv = [*SQENV, "create", prefix, "-f", yml, "--pkgs-dir", work / "pkgs", "-q"]
    ok(run(app, user, argv))
    return prefix


@pytest.fixture(scope="module")
def pip_env(app, user, work) -> Path:
    environ = work / "environ.sh"
    environ.write_text("export FROM_ENVIRON=yes\n")
    prefix = work / "pip-env"
    ok(run(app, user, [*SQENV, "create", prefix, "six==1.16.0", "cowsay==6.1", "--python", BASE_PYTHON,
                       "--environ", environ, "-q"]))  # fmt: skip
    return prefix


def export(app, user, prefix: Path, out: Path, base: Path, **kw) -> subprocess.CompletedProcess[str]:
    return run(app, user, [*SQENV, "export", prefix, "--sif", out, "--base-image", base, "-q"], **kw)


@pytest.fixture(scope="module")
def conda_sif(app, user, work, conda_env, base_sif) -> Path:
    out = work / "out" / "conda.sif"
    out.parent.mkdir()
    os.chown(out.parent, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    ok(export(app, user, conda_env, out, base_sif))
    return out


@pytest.fixture(scope="module")
def pip_sif(app, user, work, pip_env, base_sif) -> Path:
    """Exported, then moved to another directory, with the install itself gone."""
    out = work / "pip.sif"
    ok(export(app, user, pip_env, out, base_sif))
    elsewhere = work / "elsewhere"
    ok(run(app, user, ["mkdir", elsewhere]))
    ok(run(app, user, ["cp", out, elsewhere / "copy.sif"]))
    ok(run(app, user, ["mv", pip_env, work / "pip-env.moved-away"]))
    return elsewhere / "copy.sif"


# ---------------------------------------------------------------- conda
def test_conda_sif_runs_programs_with_activation(app, user, conda_sif, conda_env, work) -> None:
    here = work / "elsewhere-conda"
    ok(run(app, user, ["mkdir", "-p", here]))
    ok(run(app, user, ["cp", conda_sif, here / "c.sif"]))
    hidden = conda_env.with_name("conda-env.hidden")
    ok(run(app, user, ["mv", conda_env, hidden]))
    try:
        sif = here / "c.sif"
        assert ok(run(app, user, ["apptainer", "exec", sif, "sqhello"], cwd=here)).stdout == "prefix=/mnt/sqenv\n"
        out = ok(run(app, user, ["apptainer", "exec", sif, "sqbin"], cwd=here)).stdout
        assert out.splitlines()[0] == "/mnt/sqenv/share/sqbin/data.txt"
        script = 'echo "$SQPYTHON_ACTIVATED|$MYVAR|$CONDA_PREFIX|$CONDA_DEFAULT_ENV"; exit 7'
        proc = run(app, user, ["apptainer", "exec", sif, "sh", "-c", script], cwd=here)
        assert proc.returncode == 7 and proc.stdout == "yes|from-yml|/mnt/sqenv|/mnt/sqenv\n", proc.stderr
        # where the container sees its own PREFIX, programs run from there, as with the launchers
        proc = run(app, user, ["apptainer", "exec", "--no-mount", "tmp", sif, "sh", "-c", script], cwd=Path("/"))
        assert proc.stdout == f"yes|from-yml|{conda_env}|{conda_env}\n", proc.stderr
    finally:
        ok(run(app, user, ["mv", hidden, conda_env]))


def test_labels_and_info_of_the_sif(app, user, conda_sif, conda_env) -> None:
    inspect = ok(run(app, user, ["apptainer", "inspect", "--json", conda_sif])).stdout
    labels = json.loads(inspect)["data"]["attributes"]["labels"]
    assert labels["org.sqenv.kind"] == "conda" and labels["org.sqenv.prefix"] == str(conda_env)
    assert labels["org.sqenv.lock"] == "/mnt/sqenv/.sqenv/lock.json"
    info = json.loads(ok(run(app, user, [*SQENV, "info", conda_sif, "--json"])).stdout)
    names = {p["name"]: p for p in info["lock"]["packages"]}
    assert set(names) == {"sqpython", "sqbin"}
    assert all(len(p["sha256"]) == 64 and p["build"] and p["channel"] and p["url"] for p in names.values())
    assert info["found_in"] == "SIF objects"
    assert {c["name"] for c in info["sbom"]["components"]} == {"sqpython", "sqbin"}
    assert info["sbom"]["bomFormat"] == "CycloneDX"
    table = ok(run(app, user, [*SQENV, "info", conda_sif])).stdout
    assert "sqbin" in table and "sqpython" in table
    # the same files inside the image, at their fixed paths
    inside = ok(run(app, user, ["apptainer", "exec", conda_sif, "cat", "/mnt/sqenv/.sqenv/lock.json"])).stdout
    assert json.loads(inside)["packages"] == info["lock"]["packages"]
    sifs = ok(run(app, user, ["apptainer", "sif", "list", conda_sif])).stdout
    assert "SBOM (cyclonedx-json)" in sifs


# ---------------------------------------------------------------- pip
def test_pip_sif_is_self_contained(app, user, pip_sif, work) -> None:
    here = pip_sif.parent
    prefix = work / "pip-env"
    assert not prefix.exists()
    code = "import sys, os, six; print(sys.executable, sys.prefix, six.__file__, os.environ.get('FROM_ENVIRON'))"
    out = ok(run(app, user, ["apptainer", "exec", pip_sif, "python", "-c", code], cwd=here)).stdout.split()
    assert out == ["/mnt/sqenv/bin/python", "/mnt/sqenv", "/mnt/sqenv/lib/python3.11/site-packages/six.py", "yes"]
    assert "moo" in ok(run(app, user, ["apptainer", "exec", pip_sif, "cowsay", "-t", "moo"], cwd=here)).stdout
    (here / "s.py").write_text("import sys\nprint('args', sys.argv[1:], sys.executable)\nsys.exit(5)\n")
    proc = run(app, user, ["apptainer", "run", pip_sif, "s.py", "a b", "c"], cwd=here)
    assert proc.returncode == 5 and proc.stdout == "args ['a b', 'c'] /mnt/sqenv/bin/python\n", proc.stderr
    # its own PREFIX, when the container shows it
    proc = run(app, user, ["apptainer", "exec", "--no-mount", "tmp", pip_sif, "python", "-c", code], cwd=Path("/"))
    assert ok(proc).stdout.split()[:2] == [f"{prefix}/bin/python", str(prefix)]
    info = json.loads(ok(run(app, user, [*SQENV, "info", pip_sif, "--json"])).stdout)
    six = next(p for p in info["lock"]["packages"] if p["name"] == "six")
    assert six["version"] == "1.16.0" and six["url"].endswith("six-1.16.0-py2.py3-none-any.whl")
    assert six["sha256"] == "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254"  # PyPI's


def test_signals_reach_the_program_in_the_sif(app, user, pip_sif, work) -> None:
    marker = work / "sif-got-term"
    code = (
        "import signal, sys, time\n"
        f"def h(s, f):\n    open({str(marker)!r}, 'w').write(str(s)); sys.exit(9)\n"
        "signal.signal(signal.SIGTERM, h)\nprint('ready', flush=True)\ntime.sleep(60)\n"
    )
    argv = ["apptainer", "exec", str(pip_sif), "python", "-c", code]
    with app.popen(argv, user=user, cwd="/var/tmp", env=env_for(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   text=True) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            time.sleep(0.5)  # apptainer forwards signals a moment after the start (see test_apptainer.py)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert marker.read_text() == str(int(signal.SIGTERM))


# ---------------------------------------------------------------- reproducible images
def test_two_builds_from_one_lock_are_byte_identical(app, user, work, conda_env) -> None:
    lock = work / "lock.txt"
    ok(run(app, user, [*SQENV, "export", conda_env, "--format", "explicit", "-o", lock]))
    images = []
    for n in (1, 2):
        prefix = work / f"from-lock-{n}"
        ok(run(app, user, [*SQENV, "create", prefix, "--from", lock, "--pkgs-dir", work / f"pkgs-{n}", "-q"]))
        images.append(next(prefix.glob("v1-*.sqfs")))
    assert images[0].name == images[1].name
    assert images[0].read_bytes() == images[1].read_bytes()
    lock_inside = json.loads(ok(run(app, user, [*SQENV, "info", images[0], "--json"])).stdout)["lock"]
    assert {p["name"] for p in lock_inside["packages"]} == {"sqpython", "sqbin"}


def test_two_pip_builds_of_pinned_requirements_are_byte_identical(app, user, work) -> None:
    images = []
    for n in (1, 2):
        prefix = work / f"pinned-{n}"
        ok(run(app, user, [*SQENV, "create", prefix, "six==1.16.0", "--python", BASE_PYTHON, "-q"]))
        images.append(next(prefix.glob("v1-*.sqfs")))
    assert images[0].read_bytes() == images[1].read_bytes()
    # byte code still valid in the image (fixed times would otherwise make every pyc stale)
    proc = ok(run(app, user, [work / "pinned-1" / "bin" / "python", "-v", "-c", "import six"]))
    assert "six.cpython-311.pyc matches" in proc.stderr


# ---------------------------------------------------------------- cotainr
def test_cotainr_build_gives_the_same_environment(app, user, work, channel, base_sif) -> None:
    yml = work / "cotainr.yml"
    yml.write_text(f"channels: [{channel}]\ndependencies: [sqpython, sqbin]\nvariables:\n  MYVAR: from-yml\n")
    out = work / "cotainr.sif"
    argv = [SQENV[0], "-c", "import sys; from sqenv.cli.cotainr import main; sys.exit(main())", "build", out,
            f"--base-image={base_sif}", f"--conda-env={yml}", "--accept-licenses", "-q"]  # fmt: skip
    ok(run(app, user, argv, env={"SQENV_PKGS_DIR": str(work / "pkgs")}))
    script = 'echo "$SQPYTHON_ACTIVATED|$MYVAR|$CONDA_PREFIX"; sqhello'
    out_text = ok(run(app, user, ["apptainer", "exec", out, "sh", "-c", script])).stdout
    assert out_text == "yes|from-yml|/opt/conda/envs/conda_container_env\nprefix=/mnt/sqenv\n"
    info = json.loads(ok(run(app, user, [*SQENV, "info", out, "--json"])).stdout)
    assert {p["name"] for p in info["lock"]["packages"]} == {"sqpython", "sqbin"}
    assert not list(Path("/tmp").glob("sqenv-cotainr-*")) or all(
        p.stat().st_uid != pwd.getpwnam(user).pw_uid for p in Path("/tmp").glob("sqenv-cotainr-*")
    )
    bad = run(app, user, [*argv[:4], out, "--conda-env", yml, "--base-image", base_sif, "--use-prefix"])
    one_line_error(bad, "--use-prefix", "not supported")


def test_cotainr_system_preset_from_the_site_config(app, user, work, channel, base_sif) -> None:
    config = work / "site.toml"
    config.write_text(f'[systems.testsys]\nbase_image = "{base_sif}"\nbinds = ["/pfs", "/projappl"]\n')
    env = {"SQENV_CONFIG": str(config), "SQENV_PKGS_DIR": str(work / "pkgs")}
    front = [SQENV[0], "-c", "import sys; from sqenv.cli.cotainr import main; sys.exit(main())"]
    assert "testsys" in ok(run(app, user, [*front, "info"], env=env)).stdout
    out = work / "sys.sif"
    yml = work / "env.yml"
    ok(run(app, user, [*front, "build", out, "--system=testsys", f"--conda-env={yml}", "-q"], env=env))
    labels = json.loads(ok(run(app, user, ["apptainer", "inspect", "--json", out])).stdout)["data"]["attributes"]
    assert labels["labels"]["org.sqenv.binds"] == "/pfs,/projappl"
    assert ok(run(app, user, ["apptainer", "exec", out, "ls", "-d", "/pfs"])).stdout == "/pfs\n"
    one_line_error(run(app, user, [*front, "build", out, "--system=nope", f"--conda-env={yml}"], env=env), "nope")


# ---------------------------------------------------------------- bad input
def test_bad_input_one_line_nothing_left(app, user, work, conda_env, base_sif) -> None:
    out = work / "bad" / "x.sif"
    ok(run(app, user, ["mkdir", "-p", out.parent]))
    # no apptainer on PATH (app.run puts the shim first: call the user's sqenv directly)
    pw = pwd.getpwnam(user)
    as_user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"] if os.geteuid() == 0 else []
    argv = [*as_user, *SQENV, "export", str(conda_env), "--sif", str(out), "--base-image", str(base_sif)]
    proc = subprocess.run(argv, env=env_for({"PATH": "/usr/bin:/bin"}), cwd="/var/tmp", capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    one_line_error(proc, "apptainer")
    # a base image that is not a SIF
    one_line_error(export(app, user, conda_env, out, work / "env.yml"), "not a SIF")
    # an unwritable OUT directory
    ro = work / "read-only"
    ro.mkdir(mode=0o555, exist_ok=True)
    one_line_error(export(app, user, conda_env, ro / "x.sif", base_sif), "not writable")
    assert list(out.parent.iterdir()) == [] and list(ro.iterdir()) == []


def test_mismatched_python_is_refused_before_building(app, user, work, base_sif) -> None:
    """A pip environment on a Python the base image lacks (a site module's Python, say): simulated by
    recording such a base interpreter in a real install (only the host here has another Python)."""
    prefix = work / "on-other-python"
    ok(run(app, user, [*SQENV, "create", prefix, "six==1.16.0", "--python", BASE_PYTHON, "-q"]))
    data = json.loads((prefix / "sqenv.json").read_text())
    data["versions"][0]["python"]["executable"] = "/opt/site-python/bin/python3.11"
    (prefix / "sqenv.json").write_text(json.dumps(data))
    out = work / "mismatch.sif"
    proc = export(app, user, prefix, out, base_sif)
    one_line_error(proc, "Python 3.11", "/opt/site-python/bin/python3.11", "no such Python")
    assert not out.exists() and not list(work.glob(".mismatch.sif*"))
