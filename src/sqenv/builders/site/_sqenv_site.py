"""Installed by sqenv into the environment's site-packages.

Imported from `_sqenv.pth` only when the command line mentions `venv`,
`install` or `uninstall`, so ordinary starts pay one tuple scan. It does two
things a read-only image needs:

* `pip install`/`uninstall` into the image would fail with "Read-only file
  system"; say instead how to change the environment (`sqenv update`).
* `python -m venv --system-site-packages NEW` would give NEW only the base
  interpreter's packages; make NEW start through this install's launcher and
  see this environment's packages after its own.
"""

import os
import sys
import sysconfig

_PREFIX = os.environ.get("SQENV_PREFIX", "")


def _pip_command(argv):
    """pip's subcommand and options, if this process is pip."""
    if len(argv) > 2 and argv[1] == "-m" and argv[2] == "pip":
        rest = argv[3:]
    elif len(argv) > 1 and os.path.basename(argv[1]).startswith("pip"):
        rest = argv[2:]
    else:
        return None, []
    for i, arg in enumerate(rest):
        if not arg.startswith("-"):
            return arg, rest[i + 1 :]
    return None, []


def _check_pip():
    command, options = _pip_command(sys.orig_argv)
    if command not in ("install", "uninstall"):
        return
    if any(o.split("=")[0] in ("-t", "--target", "--prefix", "--root", "--user") for o in options):
        return
    if "-h" in options or "--help" in options or os.access(sysconfig.get_path("purelib"), os.W_OK):
        return
    where = _PREFIX or "PREFIX"
    verb = "add or upgrade packages" if command == "install" else "remove packages"
    sys.stderr.write(
        "sqenv: this environment is a read-only image; `pip %s` cannot change it.\n"
        "hint: to %s run `sqenv update %s %s` (it keeps the previous version for rollback)\n"
        % (command, verb, where, "PKG ..." if command == "install" else "--remove PKG ...")
    )
    sys.stderr.flush()
    os._exit(1)  # SystemExit is fatal while site is still importing


def _patch_venv():
    import venv

    original = venv.EnvBuilder.create

    def create(self, env_dir):
        inherit = self.system_site_packages  # venv clears it while creating (CPython #24875)
        original(self, env_dir)
        if not _PREFIX:
            return
        env_dir = os.path.abspath(env_dir)
        bin_path = os.path.join(env_dir, "bin")
        launcher = os.path.join(_PREFIX, "bin", "python")
        for name in os.listdir(bin_path):
            if name.startswith("python"):
                path = os.path.join(bin_path, name)
                os.unlink(path)
                os.symlink(launcher, path)
        if inherit:
            here = os.path.dirname(os.path.abspath(__file__))
            site = os.path.join(env_dir, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")
            with open(os.path.join(site, "_sqenv_parent.pth"), "w") as fh:
                fh.write("import site; site.addsitedir(%r)\n" % here)

    venv.EnvBuilder.create = create


if "venv" in sys.orig_argv:
    _patch_venv()
else:
    _check_pip()
