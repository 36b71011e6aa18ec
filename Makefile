# `make test` and `make demo` set everything up on a fresh machine (a venv in .venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-slow demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Two pytest workers, each test file on one (its module fixtures built once): much of the suite's
# time is single-threaded Python tracing TensorFlow graphs. Files go out in collection order, which
# tests/conftest.py puts longest first (pytest-xdist would otherwise order them by test count).
PYTEST := $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(PYTEST)

test-slow: $(STAMP)
	$(PYTEST) -m slow

# The whole study on the built-in synthetic data (about 6 minutes on 2 CPU cores); the report
# lands in demo-out/report.html. Running it again reuses the finished steps.
demo: $(STAMP)
	$(VENV)/bin/senformer demo

bench: $(STAMP)
	$(PY) benchmarks/attention.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
