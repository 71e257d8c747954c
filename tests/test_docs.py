"""The README's code runs and says true things; SPEC 8.4 (buffering middleware).

Every code block of README.rst is found by docutils (``tests/readme.py``)
and handled by its language, with no list of blocks to keep up to date:

- Python is run: imported in a fresh interpreter, its ``test_*`` functions
  run by pytest, its module-level ``app`` served by gunicorn on loopback
  and asked for every path its code or its section names (no 5xx, the
  body starts). What it imports must be installed by a ``pip install``
  line of its section (the extras exist in setup.cfg).
- Shell commands are checked: each must be a command this file knows
  (``pip install``, ``gunicorn``, ``curl``, ``make``...); a ``gunicorn``
  line must parse with gunicorn's own parser and name a README block or
  an importable module.
- Anything else must name its language (``text``, ``nginx``...).

A block that cannot run fails the suite unless an RST comment right before
it says why (``.. test: skip: <reason>``). Below the generic tests, one
test per block checks what the text around it promises.
"""

from __future__ import annotations

import ast
import configparser
import functools
import importlib.util
import logging
import os
import re
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import distributions, packages_distributions
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from werkzeug.http import parse_options_header

import live_wsgi
from live_wsgi import current_response, signals
from live_wsgi import gunicorn as gunicorn_config
from live_wsgi.context import _shared_locals
from live_wsgi.middleware import instances
from live_wsgi.testing import open_stream as open_live_stream

from . import readme
from .conftest import SETTLE
from .realserver import gunicorn, serve
from .support import WAIT, chunks, open_stream, wait

pytestmark = pytest.mark.timeout(60)

ROOT = readme.ROOT
README = readme.README.read_text(encoding="utf-8")
BLOCKS = readme.blocks()
BY_NAME = {block.filename: block for block in BLOCKS}
PYTHON = [block for block in BLOCKS if block.kind == "python"]
SHELL = [block for block in BLOCKS if block.kind == "shell"]

SETUP = configparser.ConfigParser()
SETUP.read(ROOT / "setup.cfg")
EXTRAS = {name: [line.strip() for line in value.strip().splitlines()]
          for name, value in SETUP["options.extras_require"].items()}
CORE = [line.strip() for line in SETUP["options"]["install_requires"].strip().splitlines()]


def ids(blocks: list[readme.Block]) -> list[str]:
    return [block.filename for block in blocks]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][\w.-]*", requirement)
    assert match is not None, requirement
    return canonical(match[0])


@pytest.fixture(scope="module")
def block_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every Python block saved under its name, side by side (they may import each other)."""
    directory = tmp_path_factory.mktemp("readme")
    for block in PYTHON:
        (directory / block.filename).write_text(block.code + "\n", encoding="utf-8")
    return directory


def block_env(directory: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(directory), str(ROOT)])}


def run(argv: list[str], directory: Path, timeout: float = 45) -> None:
    done = subprocess.run(argv, cwd=directory, env={**os.environ, **block_env(directory)},
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, (
        f"{' '.join(argv[-2:])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    )


# -- every block, whatever it is -------------------------------------------------------------


def test_the_readme_has_blocks_of_each_kind() -> None:
    """SPEC 8.4: the docs are parsed as RST; the parser finds Python and shell blocks."""
    assert len(PYTHON) >= 8 and len(SHELL) >= 4, [b.filename for b in BLOCKS]


@pytest.mark.parametrize("block", BLOCKS, ids=ids(BLOCKS))
def test_block_names_a_language_the_suite_handles(block: readme.Block) -> None:
    """SPEC 8.4: every block is run, checked, or declared as another language's text."""
    assert block.kind != "other" or block.language in readme.NOT_RUN, (
        f"{block.where}: a {block.language!r} block: the suite runs Python and checks shell; "
        f"for anything else add the language to NOT_RUN in tests/readme.py"
    )


@pytest.mark.parametrize("block", PYTHON, ids=ids(PYTHON))
def test_python_block_runs(block: readme.Block, block_dir: Path) -> None:
    """SPEC 1.2: each Python block runs as written, and the tests it shows pass."""
    if block.skip is not None:
        pytest.skip(f"{block.where}: {block.skip}")
    try:
        block.tree()
    except SyntaxError as exc:
        pytest.fail(f"{block.where}: not Python ({exc}); give a block in another language "
                    "its language (.. code-block:: text), or mark it '.. test: skip: <why>'")
    if block.module is not None:
        assert importlib.util.find_spec(block.module) is None, (
            f"{block.where}: {block.filename} would shadow the module {block.module!r}"
        )
    if block.test_functions():
        run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "--timeout=30", block.filename], block_dir)
    else:
        run([sys.executable, "-c",
             "import runpy, sys; runpy.run_path(sys.argv[1], run_name=sys.argv[2])",
             block.filename, (block.module or "readme_block")], block_dir)


def parses(block: readme.Block) -> bool:
    try:
        block.tree()
    except SyntaxError:
        return False  # test_python_block_runs says so
    return True


SERVED = [block for block in PYTHON if block.skip is None and block.module is not None
          and parses(block) and block.defines("app")]


def named_paths(block: readme.Block) -> list[str]:
    """The paths its code routes and its section names (in prose or in curl lines)."""
    paths = set(block.paths()) | set(readme.urls(readme.section_text(block.section)))
    for other in SHELL:
        if other.section == block.section:
            for argv in other.commands():
                if argv[0] == "curl":
                    paths |= set(readme.urls(" ".join(argv[1:])))
    return sorted(paths) or ["/"]


def wsgi_functions(block: readme.Block) -> list[str]:
    return [node.name for node in block.tree().body if isinstance(node, ast.FunctionDef)
            and [arg.arg for arg in node.args.args] == ["environ", "start_response"]]


RUNNABLE = [block for block in PYTHON if block.skip is None and parses(block)]


@pytest.mark.parametrize("block", RUNNABLE, ids=ids(RUNNABLE))
def test_a_block_that_shows_an_app_binds_app(block: readme.Block) -> None:
    """SPEC 1.2: an example WSGI app is wrapped and bound to ``app``, ready to serve."""
    if wsgi_functions(block):
        assert block.defines("app") and block.module is not None, (
            f"{block.where}: it shows {wsgi_functions(block)} but binds no module-level "
            f"'app' to serve (e.g. app = LiveMiddleware(...)), in a file named '# name.py'"
        )


@pytest.mark.parametrize("block", SERVED, ids=ids(SERVED))
def test_python_block_app_serves_the_paths_it_names(block: readme.Block, block_dir: Path) -> None:
    """SPEC 8.1: a block's ``app`` answers every path it names under a real server."""
    paths = named_paths(block)
    with serve("werkzeug", f"{block.module}:app", env=block_env(block_dir)) as server:
        for path in paths:
            response = server.get(path)
            try:
                assert response.status < 500, (block.where, path, response.read_all())
                if response.chunked:
                    response.next_chunk()  # the body starts (or ends cleanly)
                elif response.status != 304 and "content-length" in response.headers:
                    response.read_all()
            finally:
                response.close()


def pip_requirements(argv: list[str], block: readme.Block) -> list[str]:
    """The requirements of a ``pip install`` command; checks each."""
    assert argv[:2] == ["pip", "install"], f"{block.where}: {' '.join(argv)}"
    requirements = [arg for arg in argv[2:] if not arg.startswith("-")]
    assert requirements, f"{block.where}: pip install of nothing"
    for requirement in requirements:
        match = re.fullmatch(r"(?P<target>[^\[\]]+)(?:\[(?P<extras>[^\]]*)\])?", requirement)
        assert match is not None, f"{block.where}: cannot read {requirement!r}"
        target, extras = match["target"], match["extras"]
        if canonical(target) == "live-wsgi":
            pytest.fail(f"{block.where}: live_wsgi is not on the package index yet: "
                        f"install from the checkout, pip install '.[...]'")
        if target.startswith((".", "/")):
            assert (Path(target) if target.startswith("/") else ROOT / target).resolve() == ROOT, (
                f"{block.where}: {target!r} is not the checkout"
            )
            for extra in (extras or "").split(","):
                assert not extra or extra.strip() in EXTRAS, (
                    f"{block.where}: no extra {extra!r} in setup.cfg (it has {sorted(EXTRAS)})"
                )
    return requirements


def check_gunicorn(argv: list[str], block: readme.Block) -> None:
    from gunicorn.config import Config

    parser = Config().parser()
    try:
        options = parser.parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{block.where}: gunicorn cannot parse {' '.join(argv)}")
    if options.config:
        config = options.config
        if config.startswith("python:"):
            assert importlib.util.find_spec(config.removeprefix("python:")), block.where
        else:
            assert config in BY_NAME, f"{block.where}: no README block is {config}"
    assert len(options.args) == 1, f"{block.where}: which app? {options.args}"
    module, _, name = options.args[0].partition(":")
    target = BY_NAME.get(f"{module}.py")
    if target is not None:
        assert target.defines(name or "application"), (
            f"{block.where}: {target.filename} defines no {name!r}"
        )
    else:
        assert importlib.util.find_spec(module), f"{block.where}: no module {module!r}"


def check_make(argv: list[str], block: readme.Block) -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in argv[1:]:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), (
            f"{block.where}: no make target {target!r}"
        )


def check_curl(argv: list[str], block: readme.Block) -> None:
    urls = [arg for arg in argv[1:] if not arg.startswith("-")]
    assert urls and all(readme.urls(url) for url in urls), (
        f"{block.where}: curl only talks to the local server here: {argv}"
    )


def check_filesystem(argv: list[str], block: readme.Block) -> None:
    """``rm``, ``mkdir``: preparing a directory; nothing to check."""


def check_pip(argv: list[str], block: readme.Block) -> None:
    pip_requirements(argv, block)


COMMANDS: dict[str, Callable[[list[str], readme.Block], None]] = {
    "pip": check_pip,
    "gunicorn": check_gunicorn,
    "make": check_make,
    "curl": check_curl,
    "rm": check_filesystem,
    "mkdir": check_filesystem,
}


def command(argv: list[str]) -> list[str]:
    """``VAR=value cmd ...``, ``.venv/bin/cmd ...`` and ``python -m cmd ...`` as ``cmd ...``."""
    while argv and re.fullmatch(r"[A-Za-z_]\w*=.*", argv[0]):
        argv = argv[1:]
    argv = [Path(argv[0]).name, *argv[1:]] if argv else argv
    if re.fullmatch(r"python[\d.]*", argv[0]) and argv[1:2] == ["-m"] and len(argv) > 2:
        argv = argv[2:]
    return argv


@pytest.mark.parametrize("block", SHELL, ids=ids(SHELL))
def test_shell_block_commands_check_out(block: readme.Block) -> None:
    """SPEC 8.4: install lines name real extras, server lines parse and name real apps."""
    if block.skip is not None:
        pytest.skip(f"{block.where}: {block.skip}")
    commands = [command(argv) for argv in block.commands()]
    assert commands, f"{block.where}: an empty shell block"
    for argv in commands:
        check = COMMANDS.get(argv[0])
        assert check is not None, (
            f"{block.where}: the suite does not know how to check {argv[0]!r}: teach "
            f"COMMANDS in tests/test_docs.py, or mark the block '.. test: skip: <why>'"
        )
        check(argv, block)


def installed_by(block: readme.Block) -> tuple[set[str], set[str]]:
    """Extras and other packages the ``pip install`` lines in scope install."""
    extras: set[str] = set()
    packages: set[str] = set()
    for other in SHELL:
        in_scope = other.sections == block.sections[:len(other.sections)]
        if in_scope and other.index < block.index:
            for argv in map(command, other.commands()):
                if argv[:2] != ["pip", "install"]:
                    continue
                for requirement in pip_requirements(argv, other):
                    match = re.fullmatch(r"([^\[\]]+)(?:\[([^\]]*)\])?", requirement)
                    assert match is not None
                    if match[1].startswith((".", "/")):
                        extras |= {e.strip() for e in (match[2] or "").split(",") if e.strip()}
                    else:
                        packages.add(requirement_name(requirement))
    return extras, packages


@functools.cache
def module_distributions() -> dict[str, list[str]]:
    """Top-level module -> the distributions that install it (``packages_distributions``).

    Python 3.10's ``packages_distributions`` reads only ``top_level.txt``, which
    wheels built by flit or hatch (Flask, Werkzeug, blinker) lack; 3.11 and later
    infer the names from the files the wheel installed. Done here on every version.
    """
    found = {name: list(names) for name, names in packages_distributions().items()}
    for dist in distributions():
        if dist.read_text("top_level.txt") is not None:
            continue  # declared: packages_distributions has it already
        tops = set()
        for file in dist.files or ():
            if len(file.parts) > 1:
                tops.add(file.parts[0])
            elif file.suffix == ".py":
                tops.add(file.stem)
        for top in sorted(t for t in tops if t.isidentifier() and t != "__pycache__"):
            names = found.setdefault(top, [])
            if dist.metadata["Name"] not in names:
                names.append(dist.metadata["Name"])
    return found


def third_party(module_names: list[str]) -> set[str]:
    """The distributions (canonical names) these imports need."""
    distributions = module_distributions()
    needed: set[str] = set()
    for name in module_names:
        top = name.split(".")[0]
        if top == "live_wsgi":
            source = ROOT / "live_wsgi" / f"{name.split('.')[1]}.py" if "." in name else None
            if source is not None and source.exists():
                tree = ast.parse(source.read_text())
                imported = [alias.name for node in tree.body if isinstance(node, ast.Import)
                            for alias in node.names]
                imported += [node.module for node in tree.body
                             if isinstance(node, ast.ImportFrom) and node.module
                             and not node.level]
                needed |= third_party([n for n in imported if not n.startswith("live_wsgi")])
            continue
        if top in sys.stdlib_module_names or top == "__future__" or f"{top}.py" in BY_NAME:
            continue
        assert top in distributions, f"no installed distribution provides {top!r}"
        needed |= {canonical(d) for d in distributions[top]}
    return needed


@pytest.mark.parametrize("block", PYTHON, ids=ids(PYTHON))
def test_install_line_brings_what_the_block_imports(block: readme.Block) -> None:
    """SPEC 8.4: a block needing an extra (``[bottle]``) shows the install line with it."""
    if block.skip is not None:
        pytest.skip(f"{block.where}: {block.skip}")
    extras, packages = installed_by(block)
    core = {requirement_name(r) for r in CORE}
    for distribution in sorted(third_party(block.imports()) - core):
        providers = {extra for extra, reqs in EXTRAS.items()
                     if extra != "test" and distribution in {requirement_name(r) for r in reqs}}
        assert providers & extras or distribution in packages, (
            f"{block.where}: imports {distribution} but no pip install line in its section "
            f"installs it (the extra: {sorted(providers) or 'none; name the package'})"
        )


def test_the_parser_reads_languages_names_and_skip_markers(tmp_path: Path) -> None:
    """SPEC 8.4: a bare block is Python, a skip needs its reason, a typo in a marker fails."""
    source = tmp_path / "README.rst"
    source.write_text(
        "Title\n=====\n\nSection\n-------\n\nRun this::\n\n    # app.py\n    app = 1\n\n"
        ".. test: skip: a fragment of a config file\n\n.. code-block:: python\n\n"
        "    threads = 8\n\n.. code-block:: shell\n\n    pip install '.[flask]'  # ok\n"
    )
    first, skipped, shell = readme.blocks(source)
    assert (first.language, first.filename, first.module, first.sections) == (
        "python", "app.py", "app", ("Title", "Section"))
    assert first.defines("app") and not first.defines("threads")
    assert (skipped.skip, skipped.filename) == ("a fragment of a config file",
                                                "readme_section_2.py")
    assert shell.kind == "shell" and shell.commands() == [["pip", "install", ".[flask]"]]
    assert command(["X=1", ".venv/bin/python3", "-m", "pip", "install", "."]) == [
        "pip", "install", "."]
    for marker, complaint in ((".. test: skip", "needs a reason"),
                              (".. test: skip:", "needs a reason"),
                              (".. test: skipp: typo", "unknown marker")):
        source.write_text(f"Title\n=====\n\n{marker}\n\n.. code-block:: python\n\n    x = 1\n")
        with pytest.raises(readme.ReadmeError, match=complaint):
            readme.blocks(source)


# -- what the text around each block promises ------------------------------------------------

SIGNALS = [getattr(signals, name) for name in dir(signals)
           if type(getattr(signals, name)).__name__ == "NamedSignal"]


@contextmanager
def imported(filename: str, directory: Path) -> Iterator[ModuleType]:
    """A README block imported in this process; its middlewares, receivers and locals undone."""
    block = BY_NAME[filename]
    assert block.module is not None
    name = f"readme_{block.module}"
    middlewares = set(instances)
    receivers = {signal: set(signal.receivers) for signal in SIGNALS}
    shared = set(_shared_locals)
    spec = importlib.util.spec_from_file_location(name, directory / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        for middleware in set(instances) - middlewares:
            middleware.shutdown(timeout=SETTLE)
        for signal in SIGNALS:
            for key in set(signal.receivers) - receivers[signal]:
                held = signal.receivers.get(key)
                receiver = held() if isinstance(held, weakref.ref) else held
                if receiver is not None:
                    signal.disconnect(receiver)
        for shared_name in set(_shared_locals) - shared:
            live_wsgi.unshare_local(shared_name)
        del sys.modules[name]


def shell_command(section: str, program: str) -> list[str]:
    for block in SHELL:
        if block.section == section:
            for argv in map(command, block.commands()):
                if argv[0] == program:
                    return argv
    raise AssertionError(f"no {program} line in the README's {section!r}")


def test_quickstart_streams_ticks_under_its_gunicorn_line(block_dir: Path) -> None:
    """SPEC 1.3: the Quickstart's app, served as its text says: /ticks live, tick by tick."""
    argv = shell_command("Quickstart", "gunicorn")
    assert argv[-1] == "myapp:app"
    with gunicorn(argv[-1], *argv[1:-1], env=block_env(block_dir)) as server:
        page = server.get("/")
        assert page.status == 200
        assert b"/ticks" in page.read_all()  # an ordinary response of the app, unchanged
        page.close()
        ticks = server.get("/ticks")
        assert ticks.status == 200
        assert ticks.headers["content-type"] == "text/plain"
        # Each tick is its own chunk: the first reached the client before the second
        # was written ("reaches the client now").
        assert ticks.next_chunk() == b"tick 0\n"
        assert ticks.next_chunk() == b"tick 1\n"
        ticks.close()


def test_quickstart_producer_stops_when_the_client_leaves(block_dir: Path) -> None:
    """SPEC 3.6: ``stream.wait`` returns True once the client left: the loop ends early."""
    with imported("myapp.py", block_dir) as myapp:
        response = open_stream(myapp.app, "/ticks")
        assert response.read_chunks(1) == [b"tick 0\n"]
        response.close()
        # Ten ticks take nine seconds more; a producer that noticed is done at once.
        assert myapp.app.wait_idle(WAIT / 2), "the ticks went on after the client left"


def test_quickstart_and_caveats_size_threads_above_max_workers(block_dir: Path) -> None:
    """SPEC 8.1: the numbers the Quickstart and the Caveats give are the code's."""
    with imported("myapp.py", block_dir) as myapp:
        max_workers = myapp.app.executor.max_workers
    assert f"max_workers={max_workers}" in README
    assert gunicorn_config.threads > max_workers
    assert f"{gunicorn_config.threads} threads" in README
    assert f"threads = {gunicorn_config.threads}" in README
    assert f"graceful_timeout = {gunicorn_config.graceful_timeout}" in README
    assert gunicorn_config.graceful_timeout == int(gunicorn_config.SHUTDOWN_GRACE) + 25
    assert "plus 25" in README
    from gunicorn.config import Config

    connections = Config().settings["worker_connections"].default
    assert f"default {connections} clients per worker" in README  # the gevent advice


def test_sqlalchemy_recipe_gives_each_stream_its_own_session(block_dir: Path) -> None:
    """SPEC 6.2, 6.4: the excluded scoped session stays on S; W's is closed at teardown."""
    from sqlalchemy import event

    with imported("db_stream.py", block_dir) as recipe:
        began: list[tuple[Any, str]] = []
        pool_events: list[str] = []
        event.listen(recipe.Session.session_factory, "after_begin",
                     lambda session, *args: began.append(
                         (session, threading.current_thread().name)))
        event.listen(recipe.engine, "checkout", lambda *args: pool_events.append("out"))
        event.listen(recipe.engine, "checkin", lambda *args: pool_events.append("in"))
        outer = recipe.Session()  # the request thread's own session
        try:
            response = open_stream(recipe.app)
            assert response.read_all() == "1² = 1\n2² = 4\n3² = 9\n".encode()
            response.close()
            assert recipe.app.wait_idle(WAIT)
            [(inner, thread)] = began
            assert inner is not outer and thread != threading.current_thread().name
            assert not inner.in_transaction()  # removed: closed at teardown
            assert pool_events == ["out", "in"]  # its connection went back to the pool
            assert recipe.Session() is outer  # the request thread's session is untouched
        finally:
            recipe.Session.remove()


def test_sse_example_resumes_after_the_last_event_id(block_dir: Path) -> None:
    """SPEC 7.1: price events carry retry, event, id and JSON; Last-Event-ID resumes."""
    with imported("prices.py", block_dir) as prices:
        with open_live_stream(prices.app, "/", headers={"Last-Event-ID": "41"}) as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            first, second = response.read_events(2, timeout=WAIT)
        assert (first.event, first.id, first.retry) == ("price", "42", 2000)
        assert first.json() == {"symbol": "ACME", "price": 100.42}
        assert second.id == "43"
        assert prices.app.wait_idle(WAIT)


def test_download_example_sends_a_csv_attachment(block_dir: Path) -> None:
    """SPEC 7.2: ``send_stream("subscribers.csv")``: text/csv, an attachment, every row."""
    with imported("export.py", block_dir) as export:
        with open_live_stream(export.app) as response:
            assert response.headers["Content-Type"] == "text/csv"
            disposition, options = parse_options_header(response.headers["Content-Disposition"])
            assert (disposition, options) == ("attachment", {"filename": "subscribers.csv"})
            lines = response.read_all(timeout=WAIT).decode().splitlines()
        assert lines[0] == "email,updated_at"
        assert lines[1] == "user0@example.com,2026-01-01"
        assert len(lines) == 1001


def test_signals_example_logs_every_stream_and_reports_errors(
    block_dir: Path, live: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """SPEC 7.3: the receivers log each stream's facts and report an error after the commit."""
    caplog.set_level(logging.INFO, logger="streams")

    def feed(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"hello")
        if environ["PATH_INFO"] == "/broken":
            raise ValueError("boom")
        return []

    mw = live(feed)
    with imported("stream_log.py", block_dir):
        complete = open_stream(mw, "/feed")
        assert complete.read_all() == b"hello"
        complete.close()
        broken = open_stream(mw, "/broken")
        assert broken.read_chunks(1) == [b"hello"]
        with pytest.raises(live_wsgi.ResponseAborted):  # cut: no clean end
            broken.read_all()
        broken.close()
        assert mw.wait_idle(WAIT)
    messages = [r.getMessage() for r in caplog.records if r.name == "streams"]
    assert any(re.fullmatch(r"/feed 200 OK: 5 bytes in \d+\.\d s \(complete\)", m)
               for m in messages), messages
    assert "reported ValueError('boom')" in messages, messages


def test_flask_example_streams_notifications_of_the_logged_in_user(block_dir: Path) -> None:
    """SPEC 1.3: an ``@live`` Flask view writes SSE with ``g`` set by before_request."""
    with imported("flask_app.py", block_dir) as flask_app:
        with open_live_stream(flask_app.app, "/events") as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            first, second = response.read_events(2, timeout=WAIT)
            assert response.read_all(timeout=WAIT) == b""  # the view returned: the end
        assert first.json() == {"id": 1, "text": "welcome"}
        assert second.json() == {"id": 2, "text": "you have mail"}


def test_bottle_example_streams_ticks_with_the_request(block_dir: Path) -> None:
    """SPEC 1.3: a ``live=True`` Bottle route yields ticks that read ``bottle.request``."""
    with imported("bottle_app.py", block_dir) as bottle_app:
        with open_live_stream(bottle_app.app, "/ticks?name=ada") as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            body = response.read_all(timeout=WAIT).decode()
        assert body == "".join(f"tick {i} for ada\n" for i in range(10))


def test_metrics_example_counts_the_stream_it_served(block_dir: Path) -> None:
    """SPEC 7.3: the metrics app streams /ticks, and /metrics counts that stream."""
    with gunicorn("metrics_app:app", env=block_env(block_dir)) as server:
        ticks = server.get("/ticks")
        assert ticks.next_chunk() == b"tick 0\n"
        ticks.close()
        scrape = server.get("/metrics")
        assert scrape.status == 200
        text = scrape.read_all().decode()
        scrape.close()
        assert "live_wsgi_streams_started_total 1.0" in text, text


def test_the_retry_the_readme_promises_a_saturated_event_source(live: Any) -> None:
    """SPEC 2.4: busy: 503 with Retry-After; an EventSource: 200 and ``retry:`` in ms."""
    gate = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"busy")
        wait(gate, "gate")
        return []

    mw = live(app, max_workers=1, queue_timeout=0.05)
    busy = open_stream(mw)
    try:
        assert busy.read_chunks(1) == [b"busy"]
        refused = open_stream(mw)
        assert refused.status_code == 503
        assert f"Retry-After: {mw.retry_after}" in README
        assert refused.headers["Retry-After"] == str(mw.retry_after)
        refused.close()
        told = open_stream(mw, headers={"Accept": "text/event-stream"})
        assert told.status_code == 200
        body = told.read_all()
        told.close()
        assert body == f"retry: {mw.retry_after * 1000}\n\n".encode()
        assert f"retry: {mw.retry_after * 1000}" in README
    finally:
        gate.set()
        busy.read_all()
        busy.close()


# -- SPEC 8.4 --------------------------------------------------------------------------------


def buffering(app: Any) -> Any:
    """A gzip-like middleware: collects the whole body before sending it."""

    def middleware(environ: Any, start_response: Any) -> list[bytes]:
        body = app(environ, start_response)
        try:
            return [b"".join(body)]
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    return middleware


def test_buffering_middleware_defeats_streaming_and_how_to_exempt(live: Any) -> None:
    """SPEC 8.4: buffering middleware holds the body; routing live paths around it streams."""
    gate = threading.Event()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        current_response().stream.write(b"first")
        wait(gate, "gate")
        return [b" last"]

    mw = live(app)
    buffered = buffering(mw)
    # Behind the buffer nothing reaches the client until the producer is done:
    result: list[bytes] = []
    t = threading.Thread(target=lambda: result.append(b"".join(chunks(open_stream(buffered)))))
    t.start()
    gate.set()
    t.join(10)
    assert result == [b"first last"]
    # Exempted (live paths skip the buffering middleware), the first chunk
    # arrives while the producer still waits.
    gate.clear()

    def exempting(environ: Any, start_response: Any) -> Any:
        target = mw if environ["PATH_INFO"].startswith("/live") else buffered
        return target(environ, start_response)

    started = open_stream(exempting, "/live/feed")
    body = chunks(started)
    assert next(body) == b"first"
    gate.set()
    assert b"".join(body) == b" last"
    started.close()


@pytest.mark.parametrize("name", ["gzip", "ETag", "debug toolbar", "X-Accel-Buffering",
                                  "proxy_buffering off", "make run", "make test"])
def test_readme_names_the_pitfalls(name: str) -> None:
    """SPEC 8.4: the docs name buffering middleware, nginx settings and the commands."""
    assert name in README
