# Every target sets itself up: a .venv with the package installed editable.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXTRAS := test,docs,flask,bottle,gevent,gunicorn,metrics,redis,django

.PHONY: setup test lint typecheck pytest pythons browser redis docs dist dist-check wrk run bench bench-quick clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check live_wsgi tests benchmarks examples docs noxfile.py

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

# The documentation site (Sphinx) in docs/_build/html: the README's sections,
# the API from the docstrings, and the guarantees from ../shared/SPEC.md.
# Warnings are errors, and every build reads every page (-E), so a warning is
# never hidden by an up-to-date page.
SPEC_MD := ../shared/SPEC.md
docs: $(STAMP)
	@test -f $(SPEC_MD) || { echo "make docs: $(SPEC_MD) is missing; the guarantees" \
	    "page includes the behaviour specification from shared/ beside the checkout" >&2; \
	    exit 1; }
	$(BIN)/sphinx-build -b html -E -W --keep-going -q -d docs/_build/doctrees docs docs/_build/html

# The sdist and the wheel, checked as the package index would. No build
# isolation: setuptools and wheel come with the test extra, so nothing is
# downloaded per build.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist . >build.log 2>&1 \
	    || { cat build.log; rm -f build.log; exit 1; }
	rm -f build.log
	$(BIN)/twine check --strict dist/*

# The wheel installs into a clean venv (no pip of its own: .venv's pip
# installs into it, from pip's cache) and streams there.
SMOKE   := build/smoke-venv
VERSION := $(shell sed -n 's/^version *= *//p' setup.cfg)
dist-check: dist
	rm -rf $(SMOKE)
	$(BIN)/python -m venv --without-pip $(SMOKE)
	$(BIN)/python -m pip --python $(SMOKE)/bin/python install --quiet dist/*.whl
	cd build && smoke-venv/bin/python -I ../tests/wheel_smoke.py $(VERSION)

# The suite on the other supported Pythons (noxfile.py): a venv each under
# .nox/, kept between runs. A version missing here is skipped, but fails CI.
pythons: $(STAMP) browser redis
	$(BIN)/nox

test: lint typecheck docs dist-check pytest pythons

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

# The whole suite (about 13 minutes here; under 20); bench-quick: under 2 (about 105 s).
# The broadcast figures on the in-process broker and on a redis-server the
# benchmark starts itself (on a free loopback port, stopped by its PID).
BENCH_BROKERS := --broker memory:// --broker redis-server

bench: $(STAMP) wrk redis
	$(BIN)/python -m benchmarks $(BENCH_BROKERS)

bench-quick: $(STAMP) wrk redis
	$(BIN)/python -m benchmarks --quick $(BENCH_BROKERS)

clean:
	rm -rf $(VENV) .nox build dist *.egg-info docs/_build .pytest_cache .mypy_cache .ruff_cache
