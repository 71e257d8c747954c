# Every target sets itself up: a .venv with the package installed editable.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXTRAS := test,flask,bottle,gevent,gunicorn

.PHONY: setup test lint typecheck pytest pythons browser wrk run bench bench-quick clean

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

pytest: $(STAMP) browser
	$(BIN)/python -m pytest

# The suite on the other supported Pythons (noxfile.py): a venv each under
# .nox/, kept between runs. A version missing here is skipped, but fails CI.
pythons: $(STAMP) browser
	$(BIN)/nox

test: lint typecheck pytest pythons

run: $(STAMP)
	$(BIN)/gunicorn --worker-class gthread --threads 32 --workers 1 \
	    --bind 127.0.0.1:8000 --config python:live_wsgi.gunicorn examples.demo:app

# M3 of the benchmarks drives the server with Debian's wrk.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	    echo "installing Debian's wrk for the benchmarks"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }

# The whole suite (about 6 minutes here; under 20); bench-quick: under 2.
bench: $(STAMP) wrk
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP) wrk
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) .nox build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
