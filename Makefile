# The two commands: `make run` (set up + run the pipeline on the default
# dataset) and `make test`. Everything installs into .venv from requirements.lock.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.mmtower-installed
# TFX 1.16 declares Requires-Python <3.11 but works on 3.11 (see README).
export PIP_IGNORE_REQUIRES_PYTHON := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# The default dataset's real content (photos, captions, sounds) is a Debian package.
STAMPS_PACKAGE := tuxpaint-stamps-default
STAMPS_DIR := /usr/share/tuxpaint/stamps
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -y -q
# The report test opens `mmtower report`'s HTML in headless Chromium (tests only).
BROWSER_PACKAGE := chromium

.PHONY: run setup test-deps lint test test-fast clean

run: setup
	$(VENV)/bin/mmtower run

setup: $(STAMP)

$(STAMP): requirements.lock setup.py
	test -d $(STAMPS_DIR) || $(APT_GET) install $(STAMPS_PACKAGE) || ($(APT_GET) update && $(APT_GET) install $(STAMPS_PACKAGE))
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --no-deps -r requirements.lock
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	$(VENV)/bin/mmtower encoders export
	touch $(STAMP)

test-deps:
	command -v chromium >/dev/null || $(APT_GET) install --no-install-recommends $(BROWSER_PACKAGE) || ($(APT_GET) update && $(APT_GET) install --no-install-recommends $(BROWSER_PACKAGE))

# ruff's linter and formatter (ruff.toml); the import layering is a unit test (tests/test_layers.py).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint test-deps
	$(VENV)/bin/python -m pytest

# The fast tier, for every change (a few minutes): everything but the tests marked slow.
test-fast: lint
	$(VENV)/bin/python -m pytest -m "not slow"

clean:
	rm -rf $(VENV) output *.egg-info
