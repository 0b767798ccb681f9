"""`sqenv doctor PREFIX` and `sqenv info` look at what launches really use: the launcher's
header (one shared parser) and the image files with their checksums."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support import ok, sqenv


@pytest.fixture
def copy(small_env: Path, tmp_path: Path) -> Path:
    """A private copy of the small install (moving an install keeps it working)."""
    target = tmp_path / "env"
    shutil.copytree(small_env, target, symlinks=True)
    return target


def _image(prefix: Path) -> Path:
    (image,) = prefix.glob("v*.sqfs")
    return image


def test_doctor_passes_on_an_intact_install(copy: Path) -> None:
    out = ok(sqenv("doctor", copy)).stdout
    assert "ok    images: present, checksums match" in out and "All checks passed." in out


def test_doctor_fails_when_the_image_is_deleted(copy: Path) -> None:
    image = _image(copy)
    image.unlink()
    proc = sqenv("doctor", copy)
    assert proc.returncode == 1, proc.stdout
    assert f"FAIL  image: `{image}` is missing" in proc.stdout
    assert "All checks passed" not in proc.stdout


def test_doctor_fails_when_the_image_is_damaged(copy: Path) -> None:
    image = _image(copy)
    with image.open("r+b") as fh:
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 0xFF]))
    proc = sqenv("doctor", copy)
    assert proc.returncode == 1 and f"`{image}`: checksum mismatch" in proc.stdout, proc.stdout


def test_doctor_reads_the_engine_the_install_was_made_with(copy: Path) -> None:
    launcher = copy / "launcher"
    text = launcher.read_text()
    assert "\nSQENV_DEFAULT_ENGINE=auto\n" in text
    launcher.write_text(text.replace("\nSQENV_DEFAULT_ENGINE=auto\n", "\nSQENV_DEFAULT_ENGINE=apptainer\n"))
    out = sqenv("doctor", copy, env={"PATH": "/usr/local/bin:/usr/bin:/bin"}).stdout
    assert "use `apptainer` here: the install's default engine" in out, out


def test_info_shows_a_missing_image_as_an_error(copy: Path) -> None:
    image = _image(copy)
    image.unlink()
    proc = sqenv("info", copy)
    assert proc.returncode == 1
    assert f"error: `{image}` is missing" in proc.stderr
    assert "Traceback" not in proc.stderr
