# relman: `make demo` shows a deploy, a swap under traffic and a rollback; `make test` runs
# every check. Both install what they need (a venv here; nginx and mandoc via apt-get as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# One uv/pip cache for every run, so the sample app's venvs build from disk.
export UV_CACHE_DIR ?= $(HOME)/.cache/relman-tests-uv
export UV_PYTHON_DOWNLOADS ?= never
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint unit integration system-deps bench clean

$(VENV)/.stamp: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

system-deps:
	@bash .ci/system-deps

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check relman tests testing bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: $(VENV)/.stamp
	$(PY) -m pytest tests/unit

integration: $(VENV)/.stamp
	$(PY) -m pytest tests/integration

test: lint
	$(PY) -m pytest -p no:cacheprovider

demo: $(VENV)/.stamp
	$(PY) -m testing.demo

# Figures, not tests: each script prints ratios measured in the same run, and exits 1 when
# it misses its goal; the leading "-" lets the next one run all the same.
bench: $(VENV)/.stamp
	-$(PY) bench/swap.py
	-$(PY) bench/swap.py --kind uwsgi
	-$(PY) bench/deploy_speed.py --runs 3
	-$(PY) bench/supervise.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
