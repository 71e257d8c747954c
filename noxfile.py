"""The test suite on every Python live_wsgi supports, one virtualenv each.

``make test`` runs the suite on ``.venv``'s interpreter, then ``.venv/bin/nox``
runs it on the others::

    .venv/bin/nox                  # every supported version but nox's own
    .venv/bin/nox -s tests-3.12    # one version
    .venv/bin/nox -s tests         # all of them
    .venv/bin/nox -s tests-3.13 -- -k bottle -x   # pytest's arguments after --

Each list has one home, read from there: the versions are setup.cfg's
``Programming Language :: Python :: 3.X`` classifiers, the extras the
Makefile's ``EXTRAS`` (but ``docs``: no test needs Sphinx). Each session
installs the checkout editable with those extras into ``.nox/tests-3-X``
(kept between runs; reinstalled when setup.cfg or pyproject.toml change)
and runs the whole suite, the real-server and
browser tiers included: about as long as on ``.venv`` (the browser test uses
the Chromium ``make browser`` installed).

An interpreter is ``python3.X`` on ``PATH`` if that one runs (a pyenv shim for
a version pyenv has not activated does not), else pyenv's newest
``~/.pyenv/versions/3.X.*``. A version found nowhere is skipped with a warning,
except under ``CI=true``, where it fails the run.

Not for: linting or type checking (``make lint typecheck``, once, on ``.venv``).
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent


def supported_pythons() -> list[str]:
    """The ``3.X`` of each ``Programming Language :: Python :: 3.X`` classifier in setup.cfg."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    found = re.findall(r"^Programming Language :: Python :: (3\.\d+)$",
                       config["metadata"]["classifiers"], re.MULTILINE)  # fmt: skip
    if not found:
        raise RuntimeError("setup.cfg lists no 'Programming Language :: Python :: 3.X' classifier")
    return sorted(found, key=lambda version: int(version.split(".")[1]))


#: Extras of ``.venv`` the sessions leave out: ``docs`` (Sphinx and its theme)
#: serves ``make docs``, which runs once, on ``.venv``; no test imports it.
NOT_IN_SESSIONS = frozenset({"docs"})


def makefile_extras() -> str:
    """The Makefile's ``EXTRAS`` (what ``.venv`` has, so each session has it too), but
    ``NOT_IN_SESSIONS``."""
    found = re.search(r"^EXTRAS\s*:=\s*(\S+)\s*$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError("the Makefile sets no 'EXTRAS := a,b,c' line")
    extras = [extra for extra in found.group(1).split(",") if extra not in NOT_IN_SESSIONS]
    return ",".join(extras)


PYTHONS = supported_pythons()
EXTRAS = makefile_extras()
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _candidates(version: str) -> Iterator[Path]:
    """Where ``python3.X`` may be: each PATH entry in order, then pyenv's newest first."""
    name = f"python{version}"
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry:
            yield Path(entry) / name
    versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    patches = []
    if versions.is_dir():
        for path in versions.iterdir():
            matched = re.fullmatch(rf"{re.escape(version)}\.(\d+)", path.name)
            if matched:
                patches.append((int(matched.group(1)), path))
    for _, path in sorted(patches, reverse=True):
        yield path / "bin" / name


def _runs_as(executable: Path, version: str) -> bool:
    if not (executable.is_file() and os.access(executable, os.X_OK)):
        return False
    try:
        result = subprocess.run(
            [str(executable), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == version


def find_interpreter(version: str) -> Path | None:
    """The first ``python3.X`` that starts and reports that version, or None."""
    return next((path for path in _candidates(version) if _runs_as(path, version)), None)


def _put_interpreters_first_on_path() -> None:
    # nox finds "3.X" by searching PATH (python-discovery), where a pyenv
    # shim for an inactive version comes first and fails. Putting the
    # directory of the interpreter that does run ahead of it makes nox take
    # that one. Only this process and the sessions it starts see the change.
    ahead = []
    for version in PYTHONS:
        found = find_interpreter(version)
        if found is None:
            continue
        on_path = shutil.which(f"python{version}")
        if on_path is None or Path(on_path) != found:
            ahead.append(str(found.parent))
    if ahead:
        os.environ["PATH"] = os.pathsep.join([*ahead, os.environ.get("PATH", "")])


_put_interpreters_first_on_path()

# Plain `nox` runs the versions other than its own interpreter's: `make test`
# starts it from .venv, whose version `make pytest` has just run.
_OWN = f"{sys.version_info.major}.{sys.version_info.minor}"
nox.options.sessions = [f"tests-{version}" for version in PYTHONS if version != _OWN]
nox.options.reuse_venv = "yes"
nox.options.download_python = "never"  # no interpreter comes from anywhere but this machine
nox.options.error_on_missing_interpreters = CI


def _install_stamp() -> str:
    digest = hashlib.sha256(EXTRAS.encode())
    for name in ("setup.cfg", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole pytest suite on one interpreter (arguments after -- go to pytest)."""
    # Installing is skipped while setup.cfg, pyproject.toml and the extras
    # are what this virtualenv was made from (the Makefile's .venv stamp).
    # pip uses the machine's own configuration: no index is named here.
    stamp = session.env_dir / ".installed-stamp"
    wanted = _install_stamp()
    if not (stamp.is_file() and stamp.read_text() == wanted):
        session.install("--quiet", "-e", f".[{EXTRAS}]")
        stamp.write_text(wanted)
    session.run("python", "-m", "pytest", *session.posargs)
