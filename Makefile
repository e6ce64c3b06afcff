# deepdream-caffe: `make help` lists the targets.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CUDA ?= 0
export CUDA
# openmp: Caffe with the bit-neutral OpenMP layers of caffe/patches-openmp/; pristine: without
CAFFE_PATCHES ?= openmp
export CAFFE_PATCHES
CAFFE_DIR = $(shell PYTHON=$(PY) scripts/build-caffe.sh --print-dir)
OUT := out
PYTEST_ARGS ?=
FUZZ_MINUTES ?= 10
BENCH_ARGS ?=
# PyTorch's index of CPU-only wheels (requirements-bench.txt pins torch's +cpu build)
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

.PHONY: help setup dream goldens bundles verify-notebook bench test pytest fuzz test-packages caffe caffe-test \
	caffe-pristine pycaffe-test lint clean distclean docker docker-cuda docker-test

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  (CUDA=1 with setup/caffe builds the CUDA variant; CAFFE_PATCHES=pristine Caffe without its OpenMP patches)"

setup:  ## apt deps, Caffe + pycaffe (cached), .venv/ with the project
	scripts/setup.sh

dream: setup  ## the main job: the notebook's default dream of sky1024px.jpg into out/
	@mkdir -p $(OUT)
	$(VENV)/bin/deepdream-caffe fetch bvlc_googlenet >/dev/null
	sky=$$($(VENV)/bin/deepdream-caffe fetch sky1024px.jpg) && \
	  $(VENV)/bin/deepdream-caffe dream "$$sky" -o $(OUT)/sky_dream.png --seed 0

goldens: setup  ## recompute reference_images/ (pinned BLAS), say what changed
	$(PY) -m deepdream_caffe.lab.goldens update reference_images

bundles: setup  ## ready-made golden bundles of both models, three sizes (out/bundles/)
	$(PY) -m deepdream_caffe.lab.ready_bundles $(OUT)/bundles

verify-notebook: setup  ## our dreams vs the notebook's own images (needs the real weights)
	$(VENV)/bin/deepdream-caffe verify-notebook -o $(OUT)/verify-notebook

bench: setup caffe-pristine  ## time the default dream (ours, notebook, PyTorch) against the sgemm peak, BLAS kernels, sweeps, the CLI (out/bench*/)
	@# torch's CPU build only: pip finds it in PyTorch's CPU index when that is reachable, or in
	@# pip's own configured indexes and --find-links; never the multi-GB CUDA build from PyPI
	@[ "$(NO_TORCH)" = 1 ] || $(PY) -c 'import torch' 2>/dev/null || { \
	  index=; $(PY) -c 'import urllib.request as u; u.urlopen("$(TORCH_CPU_INDEX)/torch/", timeout=10)' \
	    2>/dev/null && index="--extra-index-url $(TORCH_CPU_INDEX)"; \
	  $(PY) -m pip install -q --disable-pip-version-check $$index -r requirements-bench.txt || \
	  echo "make bench: the CPU build of torch could not be installed; timing without PyTorch"; }
	$(VENV)/bin/deepdream-caffe bench -o $(OUT)/bench --repeats 3 $(BENCH_ARGS)
	$(PY) -m deepdream_caffe.lab.kernelbench -o $(OUT)/bench-kernels $(filter --quick,$(BENCH_ARGS))
	$(PY) -m deepdream_caffe.lab.sweepbench -o $(OUT)/bench-sweep
	$(PY) -m deepdream_caffe.lab.clibench -o $(OUT)/bench-cli
	$(PY) -m deepdream_caffe.lab.variants -o $(OUT)/bench-variants --size 1024x575 --iter-n 10 \
	  --layer-times 5

test: pytest caffe-test pycaffe-test  ## everything: project tests, Caffe's gtests, pycaffe's tests

pytest: setup test-packages caffe-pristine  ## the project's pytest suite
	DEEPDREAM_CAFFE_VARIANTS=required $(PY) -m pytest $(PYTEST_ARGS)

fuzz: setup  ## property tests with fresh randomness for FUZZ_MINUTES (10) minutes
	@# make test runs them derandomized (tests/conftest.py); here each round draws new examples,
	@# and a failure is printed as the @example(...) that pins it. The last round is cut short
	@# (SIGINT: pytest still reports) when the time is up.
	@end=$$(( $$(date +%s) + 60 * $(FUZZ_MINUTES) )); rc=0; \
	while left=$$(( end - $$(date +%s) )); [ $$left -gt 0 ]; do \
	  HYPOTHESIS_PROFILE=fuzz timeout --signal=INT --kill-after=30 $$left \
	    $(PY) -m pytest -q -p no:cacheprovider -m hypothesis $(PYTEST_ARGS) || \
	    { s=$$?; [ $$s = 5 ] && break; [ $$s = 124 ] || [ $$s = 2 ] || rc=1; }; \
	done; exit $$rc

test-packages:  ## Debian packages only the tests use (tests/apt-packages.txt: chromium)
	scripts/apt-install.sh $$(grep -v '^\s*#' tests/apt-packages.txt)

caffe:  ## build Caffe + pycaffe only (cached): apt deps and the .venv Python it is built for
	scripts/setup.sh --caffe-only

caffe-pristine: setup  ## also build Caffe without its OpenMP patches (cached), to compare bits
	CAFFE_PATCHES=pristine PYTHON=$(PY) scripts/build-caffe.sh >/dev/null

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

docker:  ## build the CPU image deepdream-caffe:cpu (docker/Dockerfile.cpu)
	scripts/docker-daemon.sh with scripts/docker-build.sh cpu

docker-cuda:  ## build the CUDA 13 image deepdream-caffe:cuda (docker/Dockerfile.cuda)
	scripts/docker-daemon.sh with scripts/docker-build.sh cuda

docker-test: setup  ## build the CPU image; in it: info, a dream bit-identical to the host's, errors
	scripts/docker-daemon.sh with scripts/docker-test.sh

lint:  ## ruff check, ruff format --check, shellcheck on scripts/ (installs shellcheck if missing)
	$(VENV)/bin/ruff check deepdream_caffe tests
	$(VENV)/bin/ruff format --check deepdream_caffe tests
	@command -v shellcheck >/dev/null || scripts/apt-install.sh shellcheck
	shellcheck scripts/*.sh .ci/run

clean:  ## remove outputs and Python caches in the checkout
	rm -rf $(OUT) .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean  ## also remove .venv/ and this configuration's Caffe build cache
	-rm -rf "$(CAFFE_DIR)"
	rm -rf $(VENV)
