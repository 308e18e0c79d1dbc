# Set-up and the two README commands. Everything lives in .venv; torch's CPU build is
# installed explicitly first so pip never pulls a multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
# test workers (pytest-xdist): two by default, as on CI's 2 cores; each test file runs whole on one worker, so
# the fixtures it trains once serve all its tests
WORKERS ?= 2

.PHONY: demo test test-fast setup clean docs

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	# matgnn matbench writes results with the matbench package; Matbench 0.6 pins scipy 1.7.3 (no wheel for
	# Python >= 3.11) but runs with current releases, so it is installed without its pins
	$(PY) -m pip install -q --no-deps "matbench==0.6" "matminer==0.10.1"
	# the fused CPU kernels of the gated convolutions, built once for this machine (about a minute)
	$(PY) -c "from matgnn.models import kernels; kernels.extension()"
	touch $@

setup: $(VENV)/.installed

# The main job: train on the embedded EMT alloy set (no download); leaves a run folder in runs/.
demo: $(VENV)/.installed
	$(VENV)/bin/matgnn train

# The lint, then the tests (tests needing ../shared/data skip with a reason when it is absent).
test: $(VENV)/.installed
	$(VENV)/bin/ruff check --quiet .
	$(PY) tools/gen_docs.py --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	$(PY) -m pytest -q -ra -n $(WORKERS) --dist loadfile

# The edit loop: the tests that start no process, train nothing and load no backbone (marked automatically,
# tests/conftest.py), stopping at the first failure.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -x -m "not slow" -n $(WORKERS) --dist loadfile

# The documentation pages generated from the code and the results, then the site (site/).
docs: $(VENV)/.installed
	$(PY) tools/gen_docs.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) runs matgnn-data-info site
