# relman: `make demo` shows a deploy, a swap under traffic and a rollback; `make test` runs
# every check. Both install what they need (a venv here; nginx and mandoc via apt-get as root).
SHELL := /bin/bash
# The distro's interpreter when there is one: it is what a deploy user and systemd get
# (Debian 12: 3.11.2; relman runs on 3.11.0 and later), while `python3` on an admin's PATH
# may be a newer pyenv build. `make smoke-newest` covers the newest one on the machine.
PYTHON ?= $(or $(wildcard /usr/bin/python3),python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# One uv/pip cache for every run, so the sample app's venvs build from disk.
export UV_CACHE_DIR ?= $(HOME)/.cache/relman-tests-uv
export UV_PYTHON_DOWNLOADS ?= never
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint unit integration system-deps smoke-newest bench clean install uninstall FORCE

# A venv made from another interpreter than $(PYTHON) (say, before PYTHON defaulted to the
# distro's) is made again: its pyvenv.cfg names the interpreter it came from.
PYTHON_REAL := $(shell $(PYTHON) -c 'import os, sys; print(os.path.realpath(sys.executable))')
VENV_FROM := $(shell sed -n 's/^executable = //p' $(VENV)/pyvenv.cfg 2>/dev/null)

$(VENV)/.stamp: pyproject.toml $(if $(filter-out $(PYTHON_REAL),$(VENV_FROM)),FORCE) | system-deps
	$(PYTHON) -m venv --clear $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

system-deps:
	@PYTHON=$(PYTHON) bash .ci/system-deps

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check relman tests testing bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: $(VENV)/.stamp
	$(PY) -m pytest tests/unit

integration: $(VENV)/.stamp
	$(PY) -m pytest tests/integration

# Two workers, a test file each at a time (its module fixtures stay in one process).
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile
	$(MAKE) --no-print-directory smoke-newest

# A deploy, swaps and a rollback (and the tar unpacking, whose tarfile filter 3.11.2 lacks)
# with relman on the newest Python the machine has, in its own venv; .ci/smoke-newest says
# which one, or why there is none.
smoke-newest: system-deps
	@bash .ci/smoke-newest $(PYTHON) .venv-newest

demo: $(VENV)/.stamp
	$(PY) -m testing.demo

# Figures, not tests: each script prints ratios measured in the same run, and exits 1 when
# it misses its goal; the leading "-" lets the next one run all the same. bench/fleet.py
# runs as root only (its simulated hosts are unix users).
bench: $(VENV)/.stamp
	-$(PY) bench/swap.py
	-$(PY) bench/swap.py --kind uwsgi
	-$(PY) bench/deploy_speed.py --runs 3
	-$(PY) bench/supervise.py
	-$(PY) bench/processes.py
	-$(PY) bench/scale.py
	-$(PY) bench/fleet.py

# `sudo make install`: a venv of $(PYTHON) in /opt/relman with this checkout in it (not
# editable: the checkout may go afterwards), /usr/local/bin/relman, the systemd unit, the
# logrotate file and the man pages; run again to upgrade. `sudo make uninstall` removes what
# it installed and nothing else. Every path can be set (make install BINDIR=...), or all put
# under INSTALL_ROOT; contrib/install.sh says how each file is treated.
INSTALL_ROOT ?=
PREFIX_VENV ?= $(INSTALL_ROOT)/opt/relman
BINDIR ?= $(INSTALL_ROOT)/usr/local/bin
UNITDIR ?= $(INSTALL_ROOT)/etc/systemd/system
LOGROTATEDIR ?= $(INSTALL_ROOT)/etc/logrotate.d
MANDIR ?= $(INSTALL_ROOT)/usr/local/share/man
INSTALL_VARS = PYTHON='$(PYTHON)' PREFIX_VENV='$(PREFIX_VENV)' BINDIR='$(BINDIR)' \
	UNITDIR='$(UNITDIR)' LOGROTATEDIR='$(LOGROTATEDIR)' MANDIR='$(MANDIR)'

install:
	@$(INSTALL_VARS) bash contrib/install.sh install

uninstall:
	@$(INSTALL_VARS) bash contrib/install.sh uninstall

clean:
	rm -rf $(VENV) .venv-newest .pytest_cache .mypy_cache .ruff_cache
