# Everything a fresh machine needs: `make bench` (main job) and `make test` (test suite).
VENV    ?= .venv
PYTHON  ?= python3
TORCH   ?= torch==2.13.0
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.r2et-installed
# Real datasets for tests and benchmarks (see ../shared/data/README.md); loaders download otherwise.
export R2ET_DATA ?= $(abspath ../shared/data)

.PHONY: setup test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,ray]"
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/r2et bench --out bench-out --resume

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info
