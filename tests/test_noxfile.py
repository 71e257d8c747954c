"""noxfile.py: which Pythons it tests and where it finds them (tooling; no SPEC rule)."""

from __future__ import annotations

import configparser
import os
import re
import runpy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nox
import nox.registry
import pytest

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent
#: The nox options the noxfile sets (process-wide), put back after each test.
OPTIONS = ("sessions", "reuse_venv", "download_python", "error_on_missing_interpreters")


@pytest.fixture
def load_noxfile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., dict[str, Any]]:
    """``load(*path_dirs)``: the noxfile's globals, run with only these on PATH and the
    pyenv root ``tmp_path / "pyenv"``; PATH and nox's state are restored after the test."""

    def load(*path_dirs: Path) -> dict[str, Any]:
        monkeypatch.setenv("PATH", os.pathsep.join(str(path) for path in path_dirs))
        monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
        for name in OPTIONS:
            monkeypatch.setattr(nox.options, name, getattr(nox.options, name))
        monkeypatch.setattr(nox.registry, "_REGISTRY", {})  # where @nox.session registers
        return runpy.run_path(str(ROOT / "noxfile.py"))

    return load


def fake_python(path: Path, prints: str | None) -> Path:
    """An executable at ``path`` answering as Python ``prints`` would, or failing like
    a pyenv shim for a version pyenv has not activated (``prints=None``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if prints is None:
        body = f'echo "pyenv: {path.name}: command not found" >&2\nexit 127\n'
    else:
        body = f"echo {prints}\n"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_supported_pythons_are_every_minor_from_python_requires(
    load_noxfile: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """No SPEC rule (tooling): setup.cfg's classifiers, which nox tests, start at its
    python_requires and leave no version out."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    floor = config["options"]["python_requires"].strip().removeprefix(">=")
    versions = load_noxfile(tmp_path)["PYTHONS"]
    minors = [int(version.split(".")[1]) for version in versions]
    assert versions[0] == floor
    assert minors == list(range(minors[0], minors[-1] + 1))
    assert "3.13" in versions


def test_a_failing_shim_on_path_gives_way_to_pyenvs_newest_patch(
    load_noxfile: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """No SPEC rule (tooling): a python3.X on PATH that does not run is passed over for
    pyenv's newest 3.X.N (by number, 13 > 2), whose directory then leads PATH."""
    shims = tmp_path / "shims"
    fake_python(shims / "python3.10", None)
    fake_python(tmp_path / "pyenv/versions/3.10.2/bin/python3.10", "3.10")
    newest = fake_python(tmp_path / "pyenv/versions/3.10.13/bin/python3.10", "3.10")

    namespace = load_noxfile(shims)

    assert namespace["find_interpreter"]("3.10") == newest
    assert os.environ["PATH"].split(os.pathsep)[0] == str(newest.parent)


def test_a_working_python_on_path_is_kept_and_a_missing_one_is_none(
    load_noxfile: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """No SPEC rule (tooling): a python3.X on PATH that runs as 3.X is the one taken
    (PATH left alone); one that reports another version is not; none anywhere is None."""
    bin_dir = tmp_path / "bin"
    on_path = fake_python(bin_dir / "python3.12", "3.12")
    fake_python(bin_dir / "python3.13", "3.11")  # a misnamed link
    fake_python(tmp_path / "pyenv/versions/3.12.9/bin/python3.12", "3.12")

    namespace = load_noxfile(bin_dir)

    assert namespace["find_interpreter"]("3.12") == on_path
    assert namespace["find_interpreter"]("3.13") is None
    assert os.environ["PATH"] == str(bin_dir)


def test_plain_nox_runs_the_versions_other_than_its_own(
    load_noxfile: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """No SPEC rule (tooling): `make test` ran the suite on .venv's Python, so plain
    `.venv/bin/nox` runs every other supported version, none downloaded."""
    own = f"{sys.version_info.major}.{sys.version_info.minor}"
    namespace = load_noxfile(tmp_path)
    others = [f"tests-{version}" for version in namespace["PYTHONS"] if version != own]
    assert nox.options.sessions == others
    assert nox.options.download_python == "never"


@pytest.mark.parametrize(("ci", "fails"), [("true", True), ("1", True), ("", False),
                                           ("false", False)])  # fmt: skip
def test_a_missing_python_fails_only_under_ci(
    load_noxfile: Callable[..., dict[str, Any]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, ci: str, fails: bool,
) -> None:
    """No SPEC rule (tooling): under CI=true a supported version not found fails the
    run; elsewhere it is skipped with nox's warning."""
    monkeypatch.setenv("CI", ci)
    load_noxfile(tmp_path)
    assert nox.options.error_on_missing_interpreters is fails


def test_sessions_install_the_makefiles_extras_but_docs(
    load_noxfile: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """No SPEC rule (tooling): each session has .venv's extras (the Makefile's EXTRAS),
    in its order, but ``docs``: Sphinx builds once, on .venv, and no test imports it."""
    makefile = (ROOT / "Makefile").read_text()
    found = re.search(r"^EXTRAS\s*:=\s*(\S+)\s*$", makefile, re.MULTILINE)
    assert found is not None
    extras = found.group(1).split(",")
    assert "docs" in extras and "test" in extras
    assert load_noxfile(tmp_path)["EXTRAS"].split(",") == [e for e in extras if e != "docs"]
