# deepdream-caffe: `make help` lists the targets.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CUDA ?= 0
export CUDA
CAFFE_DIR = $(shell PYTHON=$(PY) scripts/build-caffe.sh --print-dir)
OUT := out
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help setup dream goldens verify-notebook bench test pytest test-packages caffe caffe-test pycaffe-test lint clean distclean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  (CUDA=1 with setup/caffe builds the CUDA variant)"

setup:  ## apt deps, Caffe + pycaffe (cached), .venv/ with the project
	scripts/setup.sh

dream: setup  ## the main job: the notebook's default dream of sky1024px.jpg into out/
	@mkdir -p $(OUT)
	$(VENV)/bin/deepdream-caffe fetch bvlc_googlenet >/dev/null
	sky=$$($(VENV)/bin/deepdream-caffe fetch sky1024px.jpg) && \
	  $(VENV)/bin/deepdream-caffe dream "$$sky" -o $(OUT)/sky_dream.png --seed 0

goldens: setup  ## recompute reference_images/ (pinned BLAS), say what changed
	$(PY) -m deepdream_caffe.lab.goldens update reference_images

verify-notebook: setup  ## our dreams vs the notebook's own images (needs the real weights)
	$(VENV)/bin/deepdream-caffe verify-notebook --out $(OUT)/verify-notebook

bench: setup  ## time the default dream (ours, notebook, PyTorch) and sweeps (out/bench*/)
	@[ "$(NO_TORCH)" = 1 ] || $(PY) -c 'import torch' 2>/dev/null || \
	  $(PY) -m pip install -q --disable-pip-version-check -r requirements-bench.txt
	$(VENV)/bin/deepdream-caffe bench --out $(OUT)/bench $(BENCH_ARGS)
	$(PY) -m deepdream_caffe.lab.sweepbench --out $(OUT)/bench-sweep

test: pytest caffe-test pycaffe-test  ## everything: project tests, Caffe's gtests, pycaffe's tests

pytest: setup test-packages  ## the project's pytest suite
	$(PY) -m pytest $(PYTEST_ARGS)

test-packages:  ## Debian packages only the tests use (tests/apt-packages.txt: chromium)
	scripts/apt-install.sh tests/apt-packages.txt

caffe: setup  ## build Caffe only (same as the build step of setup)

caffe-test: setup  ## build and run Caffe's own CPU gtest suite (GPU tests filtered out)
	PYTHON=$(PY) scripts/build-caffe.sh --test-binary >/dev/null
	@# run from the source root: the tests read src/caffe/test/test_data by relative path
	cd $(CAFFE_DIR)/src && ../build/test/test.testbin --gtest_filter='-*GPU*' \
	  >$(CAFFE_DIR)/gtest.log 2>&1; rc=$$?; tail -n 3 $(CAFFE_DIR)/gtest.log; \
	  [ $$rc = 0 ] || echo "caffe-test: failed, full log: $(CAFFE_DIR)/gtest.log"; exit $$rc

pycaffe-test: setup  ## pycaffe's unit tests, against the installed pycaffe
	@# importlib mode keeps the source tree's caffe/ off sys.path (the built one is imported);
	@# PYTHONPATH lets test_solver import its sibling test_net
	GLOG_minloglevel=2 PYTHONPATH=$(CAFFE_DIR)/src/python/caffe/test \
	  $(PY) -m pytest -q -p no:cacheprovider --import-mode=importlib \
	  -W ignore::DeprecationWarning $(CAFFE_DIR)/src/python/caffe/test \
	  --ignore=$(CAFFE_DIR)/src/python/caffe/test/test_draw.py \
	  -o addopts= -o filterwarnings= --rootdir=$(CAFFE_DIR)/src/python

lint:  ## ruff over the package and tests
	$(VENV)/bin/ruff check deepdream_caffe tests

clean:  ## remove outputs and Python caches in the checkout
	rm -rf $(OUT) .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean  ## also remove .venv/ and this configuration's Caffe build cache
	-rm -rf "$(CAFFE_DIR)"
	rm -rf $(VENV)
