"""Site configuration: system < user < SQENV_CONFIG file < environment < command line; forced wins."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from sqenv import cli
from sqenv.cli import config as cli_config
from sqenv.cli.create import add_build_options
from sqenv.config import host_mpi_dirs, launcher_lines, launcher_values, load_config, resolve_build_options
from sqenv.errors import InputError
from sqenv.ui import UI
from support import SQENV, unavailable


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Where the three files live; the environment for load_config and the CLI."""
    home = tmp_path / "home"
    (home / ".config" / "sqenv").mkdir(parents=True)
    return {
        "system": tmp_path / "etc" / "config.toml",
        "user": home / ".config" / "sqenv" / "config.toml",
        "env": tmp_path / "job.toml",
        "home": home,
    }


def environ(files: dict[str, Path], **extra: str) -> dict[str, str]:
    env = {"HOME": str(files["home"]), "SQENV_SYSTEM_CONFIG": str(files["system"])}
    if files["env"].exists():
        env["SQENV_CONFIG"] = str(files["env"])
    return {**env, **extra}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def capture() -> tuple[UI, io.StringIO]:
    out = io.StringIO()
    return UI(console=Console(file=out, no_color=True, width=200)), out


def test_defaults_without_any_file(files: dict[str, Path]) -> None:
    cfg = load_config(environ(files))
    assert (cfg.get("compression"), cfg.get("idle_timeout"), cfg.get("stage_dir")) == ("zstd", 60, "/tmp")
    assert cfg.source("jobs") == "default"
    assert [read for _layer, _path, read in cfg.files] == [False, False]


def test_precedence_system_user_env_file_cli(files: dict[str, Path]) -> None:
    write(files["system"], '[defaults]\njobs = 1\ncompression = "gzip"\nkeep_versions = 5\nidle_timeout = 10\n')
    write(files["user"], "[defaults]\njobs = 2\nkeep_versions = 4\n")
    write(files["env"], "[defaults]\njobs = 3\n")
    cfg = load_config(environ(files))
    assert cfg.get("compression") == "gzip" and cfg.source("compression").startswith("system config")
    assert cfg.get("keep_versions") == 4 and cfg.source("keep_versions").startswith("user config")
    assert cfg.get("jobs") == 3 and cfg.source("jobs") == f"SQENV_CONFIG {files['env']}"
    assert cfg.get("jobs", 8) == 8 and cfg.source("jobs", 8) == "command line"
    # the environment variables sqenv already honours come between the files and the command line
    cfg = load_config(environ(files, SQENV_IDLE_TIMEOUT="7", SQENV_BUILD_DIR="/scratch/b"))
    assert (cfg.get("idle_timeout"), cfg.source("idle_timeout")) == (7, "environment SQENV_IDLE_TIMEOUT")
    assert cfg.get("build_dir") == "/scratch/b"


def test_forced_wins_over_everything_and_warns(files: dict[str, Path]) -> None:
    write(files["system"], '[forced]\njobs = 4\nengine = "embedded"\n')
    write(files["user"], '[defaults]\njobs = 2\n[forced]\njobs = 16\nengine = "apptainer"\n')
    cfg = load_config(environ(files, SQENV_ENGINE="apptainer"))
    ui, out = capture()
    assert cfg.get("jobs", 8, ui) == 4
    assert cfg.get("engine", None, ui) == "embedded"  # over the user's file and SQENV_ENGINE
    assert cfg.get("jobs", 4, ui) == 4  # the same value on the command line: nothing to warn about
    warnings = out.getvalue().strip().splitlines()
    assert warnings == [f"warning: jobs = 4 is forced by the system config {files['system']}; ignoring 8"]
    assert cfg.source("jobs", 8) == f"system config {files['system']}" and cfg.setting("jobs").forced


def test_paths_expand_at_build_time_only(files: dict[str, Path]) -> None:
    write(files["system"], '[defaults]\nbuild_dir = "$SCRATCH/build"\ncache_dir = "~/.c"\nruntime_dir = "/dev/shm/x"\n')
    cfg = load_config(environ(files, SCRATCH="/scratch/p1"))
    assert cfg.get("build_dir") == "/scratch/p1/build"
    assert cfg.get("cache_dir").endswith("/.c") and not cfg.get("cache_dir").startswith("~")
    write(files["system"], '[defaults]\nruntime_dir = "$HOME/run"\n')
    with pytest.raises(InputError, match="absolute path"):
        load_config(environ(files))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[defaults]\nbogus = 1\n", "unknown key `bogus`"),
        ("[default]\njobs = 1\n", "unknown section [default]"),
        ('[defaults]\njobs = "many"\n', "`jobs` must be an integer >= 1"),
        ('[defaults]\nengine = "docker"\n', '`engine` must be one of "auto", "embedded"'),
        ('[defaults]\nmpi_libraries = "/opt/mpi"\n', "`mpi_libraries` must be a list of absolute paths"),
        ("[defaults\n", "is not valid TOML"),
        ('[profiles.gpu]\nenv = { X = "`id`" }\n', "env X: only plain text and $VAR/${VAR} are allowed"),
        ('[profiles.gpu]\nenv = { X = "$(id)" }\n', "env X: only plain text and $VAR/${VAR} are allowed"),
        ('[profiles.gpu]\nenv = { X = "${SQENV_CONTAINER=/tmp/x.sif}" }\n', "only plain text and $VAR/${VAR}"),
        ('[profiles.gpu]\nenv = { SQENV_ENGINE = "x" }\n', "`SQENV_ENGINE` is not a variable name sqenv may set"),
        ('[profiles.gpu]\nbind_paths = ["opt"]\n', "must be a list of absolute paths"),
        ('[profiles.gpu]\nbinds = ["/opt"]\n', "unknown key 'binds'"),
    ],
    ids=[
        "unknown-key",
        "unknown-section",
        "not-int",
        "bad-engine",
        "not-a-list",
        "bad-toml",
        "backquote",
        "command",
        "assigning-expansion",
        "own-variable",
        "relative-bind",
        "profile-key",
    ],
)
def test_bad_files_name_the_file_and_the_key(files: dict[str, Path], text: str, message: str) -> None:
    write(files["user"], text)
    with pytest.raises(InputError) as err:
        load_config(environ(files))
    assert message in err.value.message and str(files["user"]) in err.value.message


def test_missing_sqenv_config_file_is_an_error(files: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_config(environ(files, SQENV_CONFIG=str(files["env"])))


def test_create_build_options_come_from_the_config(files: dict[str, Path]) -> None:
    write(files["system"], '[defaults]\ncompression = "gzip"\ncompression_level = 4\n[forced]\njobs = 2\n')
    write(files["user"], '[defaults]\nbuild_dir = "/var/tmp/b"\n')
    parser = argparse.ArgumentParser()
    add_build_options(parser)
    cfg = load_config(environ(files))
    ui, out = capture()

    def resolved(*argv: str) -> dict:
        return resolve_build_options(vars(parser.parse_args(argv)), cfg, ui)[0]

    got = resolved("-j", "8")
    assert (got["jobs"], got["compression_level"], got["build_dir"]) == (2, 4, Path("/var/tmp/b"))
    assert "jobs = 2 is forced" in out.getvalue()
    got = resolved("--compression", "xz", "--build-dir", "/tmp/mine")
    assert (got["compression"], got["build_dir"]) == ("xz", Path("/tmp/mine"))  # the command line beats defaults
    assert resolved()["compression"] == "gzip"


def test_launcher_header_user_env_var_beats_default_not_forced(files: dict[str, Path]) -> None:
    write(
        files["system"],
        '[defaults]\nidle_timeout = 30\nstage_dir = "/local/stage"\n[forced]\nruntime_dir = "/dev/shm/r"\n',
    )
    cfg = load_config(environ(files, SQENV_IDLE_TIMEOUT="99"))  # the builder's own variable is not baked in
    lines = launcher_lines(cfg)
    script = "\n".join([*lines, 'echo "$SQENV_IDLE $SQENV_RUNTIME $SQENV_STAGE"'])
    plain = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env={}).stdout
    assert plain == "30 /dev/shm/r /local/stage\n"
    user = {"SQENV_IDLE_TIMEOUT": "5", "SQENV_RUNTIME_DIR": "/tmp/x", "SQENV_STAGE_DIR": "/tmp/s"}
    assert (
        subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=user).stdout == "5 /dev/shm/r /tmp/s\n"
    )
    values = launcher_values(cfg)
    assert values["SQENV_DEFAULT_ENGINE"] == "auto" and values["SQENV_LD_PREPEND"] == ""


def test_mpi_host_values(files: dict[str, Path], tmp_path: Path) -> None:
    lib = tmp_path / "mpi" / "lib"
    lib.mkdir(parents=True)
    (lib / "libmpi.so.12").write_text("")
    write(
        files["system"], f'[defaults]\nbind_paths = ["/scratch/p1"]\nmpi_libraries = ["{lib}/libmpi.so.12", "/opt/x"]\n'
    )
    cfg = load_config(environ(files))
    assert launcher_values(cfg)["SQENV_LD_PREPEND"] == ""  # mpi = none
    values = launcher_values(cfg, mpi="host")
    assert values["SQENV_LD_PREPEND"] == f"{lib}:/opt/x"
    assert values["SQENV_BIND_PATHS"] == f"/scratch/p1:{lib}/libmpi.so.12:/opt/x"


# ---------------------------------------------------------------- `sqenv config`
def sqenv_config(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a child with exactly this environment (no fallback: the
    command must be registered in sqenv.cli)."""
    full = {"PATH": "/usr/bin:/bin", **env}
    return subprocess.run([*SQENV, "config", *args], capture_output=True, text=True, env=full)


def test_sqenv_config_names_the_source_of_each_value(files: dict[str, Path]) -> None:
    write(files["system"], '[defaults]\ncompression = "gzip"\n[forced]\nmpi = "host"\n')
    write(files["user"], "[defaults]\njobs = 2\n")
    write(files["env"], "[defaults]\nidle_timeout = 20\n")
    env = environ(files, SQENV_STAGE_DIR="/local")
    proc = sqenv_config(env)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if " = " in line and not line.startswith("#")}
    assert set(rows) == set(cli_config.KEYS)
    assert rows["compression"].endswith(f"# system config {files['system']}") and '"gzip"' in rows["compression"]
    assert rows["mpi"].endswith(f"# forced by system config {files['system']}")
    assert rows["jobs"].endswith(f"# user config {files['user']}")
    assert rows["idle_timeout"].endswith(f"# SQENV_CONFIG {files['env']}")
    assert rows["stage_dir"].endswith("# environment SQENV_STAGE_DIR")
    assert rows["keep_versions"].endswith("# default")
    data = json.loads(sqenv_config(env, "--json").stdout)
    assert data["settings"]["mpi"] == {"value": "host", "source": f"system config {files['system']}", "forced": True}
    assert [f["read"] for f in data["files"]] == [True, True, True]
    assert sqenv_config(env, "stage_dir").stdout == "/local\n"
    bad = sqenv_config(env, "nope")
    assert bad.returncode == 2 and "unknown key `nope`" in bad.stderr


def test_config_command_runs_in_process(monkeypatch: pytest.MonkeyPatch, files: dict[str, Path], capsys) -> None:
    assert cli_config in cli.COMMANDS
    for key, value in environ(files).items():
        monkeypatch.setenv(key, value)
    assert cli.main(["config", "compression"]) == 0
    assert capsys.readouterr().out == "zstd\n"


def test_host_mpi_dirs_found_on_cray_and_debian(files: dict[str, Path]) -> None:
    cfg = load_config(environ(files))
    cray = {"CRAY_LD_LIBRARY_PATH": "/opt/cray/pe/mpich/8/lib:/opt/cray/pe/pmi/6/lib:/opt/cray/pe/mpich/8/lib"}
    assert host_mpi_dirs(cfg, cray) == ["/opt/cray/pe/mpich/8/lib", "/opt/cray/pe/pmi/6/lib"]


def test_host_mpi_in_the_loaders_default_directories_needs_no_path(files: dict[str, Path]) -> None:
    """Debian's OpenMPI lives in the loader's default directories: prepending them would shadow
    the environment's own libraries, so nothing is prepended (and it is not "no MPI found")."""
    ldconfig = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    system = [line for line in ldconfig.splitlines() if line.strip().startswith("libmpi.so") and "-linux-gnu/" in line]
    if not system:
        unavailable("no libmpi.so in the loader's default directories: `sh scripts/setup.sh --test` installs OpenMPI")
    assert host_mpi_dirs(load_config(environ(files)), {}) == []


def test_a_launch_profile_goes_into_the_launcher(files: dict[str, Path]) -> None:
    """`[profiles.NAME]`: binds after the site's, variables set at launch unless the caller has them."""
    from sqenv.publish.launchers import render

    write(files["user"], '[defaults]\nbind_paths = ["/pfs"]\n[profiles.gpu]\nbind_paths = ["/opt/cray"]\n'
          'env = { MIOPEN_USER_DB_PATH = "/tmp/${USER}-miopen" }\n')  # fmt: skip
    config = load_config(environ(files))
    profile = config.get("profiles")["gpu"]
    text = render(["v1.sqfs"], activate=False, options=dict(profile), config=config)
    assert "SQENV_BIND_PATHS=/pfs:/opt/cray" in text
    header = text.split("\n\n", 1)[0] + '\nprintf "%s\\n" "$MIOPEN_USER_DB_PATH"\n'
    out = subprocess.run(["sh", "-c", header], env={"USER": "ana"}, capture_output=True, text=True)
    assert out.stdout.strip() == "/tmp/ana-miopen"
    mine = subprocess.run(["sh", "-c", header], env={"USER": "ana", "MIOPEN_USER_DB_PATH": "/x"},
                          capture_output=True, text=True)  # fmt: skip
    assert mine.stdout.strip() == "/x"
