# Every target sets itself up: a .venv with the package installed editable.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXTRAS := test,flask,bottle,gevent,gunicorn,metrics,redis,django

.PHONY: setup test lint typecheck pytest pythons browser redis wrk run bench bench-quick clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check live_wsgi tests benchmarks examples noxfile.py

typecheck: $(STAMP)
	$(BIN)/mypy

# The browser test drives Debian's Chromium (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	    echo "installing Debian's chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The broadcast tests run Debian's redis-server on a free loopback port of
# their own. Installing the package must not start the system service: a
# policy-rc.d that says no is put in place for the install when none exists.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	    echo "installing Debian's redis-server for the broadcast tests"; \
	    guard=/usr/sbin/policy-rc.d; \
	    if [ -e $$guard ]; then guard=; else \
	        printf '#!/bin/sh\nexit 101\n' > $$guard && chmod +x $$guard; fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	    status=$$?; [ -z "$$guard" ] || rm -f $$guard; exit $$status; }

pytest: $(STAMP) browser redis
	$(BIN)/python -m pytest

# The suite on the other supported Pythons (noxfile.py): a venv each under
# .nox/, kept between runs. A version missing here is skipped, but fails CI.
pythons: $(STAMP) browser redis
	$(BIN)/nox

test: lint typecheck pytest pythons

run: $(STAMP)
	$(BIN)/gunicorn --worker-class gthread --threads 32 --workers 1 \
	    --bind 127.0.0.1:8000 --config python:live_wsgi.gunicorn examples.demo:app

# The docs' picture of the demo, docs/_static/demo.png: the page in headless
# Chromium on a free loopback port, its export caught partway.
.PHONY: screenshot
screenshot: $(STAMP) browser
	$(BIN)/python -m tests.demo_screenshot

# M3 of the benchmarks drives the server with Debian's wrk.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	    echo "installing Debian's wrk for the benchmarks"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }

# The whole suite (about 6 minutes here; under 20); bench-quick: under 2.
# The broadcast figures on the in-process broker and on a redis-server the
# benchmark starts itself (on a free loopback port, stopped by its PID).
BENCH_BROKERS := --broker memory:// --broker redis-server

bench: $(STAMP) wrk redis
	$(BIN)/python -m benchmarks $(BENCH_BROKERS)

bench-quick: $(STAMP) wrk redis
	$(BIN)/python -m benchmarks --quick $(BENCH_BROKERS)

clean:
	rm -rf $(VENV) .nox build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
