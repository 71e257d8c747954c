"""Bottle integration: SPEC 1.3, thread-local request/response on the worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bottle
import pytest

from live_wsgi import SSE, current_response
from live_wsgi.bottle import LivePlugin

from .apps.bottle_after_commit import KINDS, facts
from .support import WAIT, chunks, open_stream, webtest_app

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def bottle_app() -> Iterator[tuple[bottle.Bottle, LivePlugin, dict[str, Any]]]:
    app = bottle.Bottle()
    plugin = LivePlugin(max_workers=4)
    app.install(plugin)
    seen: dict[str, Any] = {}

    @app.route("/plain")
    def plain() -> str:
        seen["plain thread"] = threading.current_thread().name
        return "plain"

    @app.route("/ticks", live=True)
    def ticks() -> Iterator[str]:
        bottle.response.content_type = "text/plain"
        bottle.response.set_header("X-Name", bottle.request.query.name)
        seen["live thread"] = threading.current_thread().name
        for i in range(3):
            yield f"tick {i} for {bottle.request.query.name}\n"

    @app.route("/events", live={"heartbeat": 5})
    def events() -> None:
        sse = SSE(current_response().stream)
        sse.write({"q": bottle.request.query.q})
        bottle.response.set_header("X-Too-Late", "1")  # ignored after commit

    @app.route("/flüsse", live=True)
    def rivers() -> None:
        thread = threading.current_thread().name
        current_response().stream.write(f"{bottle.request.path} on {thread}")

    yield app, plugin, seen
    app.close()


def test_only_live_routes_hop(bottle_app: Any) -> None:
    """SPEC 1.3: a live route runs on a worker; the others stay on the server thread."""
    app, _plugin, seen = bottle_app
    assert webtest_app(app).get("/plain").text == "plain"
    assert seen["plain thread"] == threading.current_thread().name
    webtest_app(app).get("/nope", status=404)


def test_bottle_request_and_response_on_the_worker(bottle_app: Any) -> None:
    """SPEC 1.2: bottle.request/response are this request's, on W; a generator streams."""
    app, _plugin, seen = bottle_app
    started = open_stream(app, "/ticks?name=ada")
    assert started.headers["X-Name"] == "ada"
    assert started.headers["Content-Type"].startswith("text/plain")
    body = b"".join(chunks(started))
    started.close()
    assert body == b"tick 0 for ada\ntick 1 for ada\ntick 2 for ada\n"
    assert seen["live thread"].startswith("live_wsgi")


def test_writing_callback_and_route_options(bottle_app: Any) -> None:
    """SPEC 2.2: a callback that wrote is committed; late bottle.response headers are ignored."""
    app, plugin, _seen = bottle_app
    response = webtest_app(app, lint=True).get("/events?q=x")
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.text == ':\ndata: {"q":"x"}\n\n'  # the opening comment, then the event
    assert "X-Too-Late" not in response.headers
    assert plugin.middleware.options_for(
        {"PATH_INFO": "/events", "REQUEST_METHOD": "GET"}).heartbeat == 5.0


def test_concurrent_requests_keep_their_own_request(bottle_app: Any) -> None:
    """SPEC 6.3: concurrent live requests never see each other's bottle.request."""
    app, _plugin, _seen = bottle_app
    results = {}

    def fetch(name: str) -> None:
        results[name] = webtest_app(app).get(f"/ticks?name={name}").text

    threads = [threading.Thread(target=fetch, args=(f"n{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for name, text in results.items():
        assert text.count(f"for {name}\n") == 3
    assert len(results) == 8


def test_non_ascii_route_is_live(bottle_app: Any) -> None:
    """SPEC 1.3: a live route with non-ASCII characters is live: Bottle's decoded path decides."""
    app, _plugin, _seen = bottle_app
    with open_stream(app, "/fl%C3%BCsse") as started:
        assert started.status_code == 200
        assert started.read_all().decode().startswith("/flüsse on live_wsgi")


def _bound_locals() -> list[str]:
    """Which of Bottle's thread-locals are bound on this thread."""
    bound = []
    for name, read in (("request", lambda: bottle.request.environ),
                       ("response", lambda: bottle.response.status_line)):
        try:
            read()
        except RuntimeError:  # Bottle: "Request context not initialized."
            continue
        bound.append(name)
    return bound


def test_pool_thread_never_carries_bottle_locals_into_the_next_job() -> None:
    """SPEC 6.3: each job starts with Bottle's request/response unbound and leaves them unbound."""
    app = bottle.Bottle()
    seen_by_setup: list[list[str]] = []
    plugin = LivePlugin(max_workers=1, setup=lambda environ: seen_by_setup.append(
        [bottle.request.path] if _bound_locals() else []))
    app.install(plugin)

    @app.route("/<name>", live=True)
    def report(name: str) -> str:
        return f"report for {name}"

    @app.route("/own-hooks/<name>", live={"setup": lambda environ: seen_by_setup.append(
        ["own hook", *_bound_locals()])})
    def own_hooks(name: str) -> str:
        return f"report for {name}"

    try:
        client = webtest_app(app)
        assert client.get("/alice-secret-report").text == "report for alice-secret-report"
        assert client.get("/bob").text == "report for bob"  # the same pool thread
        assert client.get("/own-hooks/carol").text == "report for carol"
        assert plugin.middleware.wait_idle(WAIT)
        left_on_the_thread = plugin.middleware.executor.submit(_bound_locals).result(WAIT)
    finally:
        app.close()
    assert seen_by_setup == [[], [], ["own hook"]]
    assert left_on_the_thread == []


def check_failure_after_commit(seen: dict[str, Any], kind: str) -> None:
    """What a client and the logs must show when a live route fails after writing."""
    assert seen["status"] == "200 OK"
    assert seen["body"] == "part;"  # no error page appended
    assert seen["ending"] == "cut"  # no clean end: the client can tell
    assert seen["idle"]
    if kind == "abort":
        expected = "HeadersAlreadySent: start_response('403 Forbidden')"
    else:
        expected = "RuntimeError: broke mid-stream"
    assert len(seen["reported"]) == 1 and seen["reported"][0].startswith(expected)
    assert seen["logged"] == seen["reported"]


@pytest.mark.parametrize("kind", KINDS)
def test_failure_after_the_first_write_cuts_the_body(kind: str) -> None:
    """SPEC 5.2: abort() or an error after a live route wrote: body cut, logged, reported."""
    check_failure_after_commit(facts(kind), kind)


#: The oldest Bottle setup.cfg allows.
OLDEST_BOTTLE = "0.12.25"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def oldest_bottle(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Path:
    """A directory holding Bottle 0.12.25, pip-installed once into pytest's cache.

    Needs the package registry (nothing else) the first time. If that fails
    the tests skip, except under CI=true, where they fail.
    """
    cache = getattr(request.config, "cache", None)
    parent = cache.mkdir("bottle") if cache is not None else tmp_path_factory.mktemp("bottle")
    target = parent / OLDEST_BOTTLE
    if (target / f"bottle-{OLDEST_BOTTLE}.dist-info").is_dir():
        return target
    # Install beside it, then move it in whole: an interrupted install is
    # never mistaken for a finished one.
    partial = parent / f"{OLDEST_BOTTLE}.partial-{os.getpid()}"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--target", str(partial), f"bottle=={OLDEST_BOTTLE}"],
            capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        failure = result.stderr[-2000:] if result.returncode else ""
    except subprocess.TimeoutExpired:
        failure = "pip did not finish within 240 s"
    if not failure and not target.exists():
        partial.rename(target)
    shutil.rmtree(partial, ignore_errors=True)
    if not (target / f"bottle-{OLDEST_BOTTLE}.dist-info").is_dir():
        message = f"could not pip install bottle=={OLDEST_BOTTLE}: {failure}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return target


def run_on_oldest_bottle(oldest_bottle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python *args`` in this checkout, importing Bottle 0.12.25 before the installed one."""
    path = [str(oldest_bottle), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def on_oldest_bottle(test: Any) -> Any:
    """Mark a test that runs code on Bottle 0.12.25 (the first one installs it)."""
    test = pytest.mark.timeout(300)(test)
    return pytest.mark.skipif(
        sys.version_info >= (3, 13), reason="Bottle 0.12.25 imports cgi, which Python 3.13 removed"
    )(test)


@pytest.mark.parametrize("kind", KINDS)
@on_oldest_bottle
def test_failure_after_the_first_write_cuts_the_body_on_bottle_0_12(
    kind: str, oldest_bottle: Path
) -> None:
    """SPEC 5.2: the same on Bottle 0.12.25 (its own 500 page, no exc_info), in a subprocess."""
    result = run_on_oldest_bottle(oldest_bottle, "-m", "tests.apps.bottle_after_commit", kind)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["bottle"] == OLDEST_BOTTLE
    check_failure_after_commit(seen, kind)


@on_oldest_bottle
def test_this_module_passes_on_bottle_0_12(oldest_bottle: Path) -> None:
    """SPEC 1.3, 6.3: route options, hooks, non-ASCII routes, thread-locals on Bottle 0.12.25."""
    version = run_on_oldest_bottle(oldest_bottle, "-c", "import bottle; print(bottle.__version__)")
    assert version.stdout.strip() == OLDEST_BOTTLE, version.stderr
    result = run_on_oldest_bottle(
        oldest_bottle, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
        "-k", "not bottle_0_12",  # these tests, minus the ones that start this one
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_status_set_on_the_live_response_is_kept() -> None:
    """SPEC 2.2: a status set on current_response() goes out; Bottle's default 200 is no error."""
    app = bottle.Bottle()
    plugin = LivePlugin(max_workers=1)
    app.install(plugin)

    @app.route("/created", live=True)
    def created() -> None:
        current_response().status_code = 201
        current_response().stream.write("made")

    try:
        with open_stream(app, "/created") as started:
            assert started.status == "201 Created"
            assert started.read_all() == b"made"  # a clean end, not cut
    finally:
        app.close()
