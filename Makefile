# Quick start (see README):  make demo   |   make test
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
NATIVE  := $(wildcard cuda/include/*/*.h cuda/include/*/*.cuh cuda/csrc/*.h cuda/csrc/*.cpp cuda/csrc/*/*.cpp cuda/csrc/*/*.cu)

.PHONY: setup demo test test-setup cuda-check cuda-build clean

## setup: create .venv, install the CPU (or CUDA, on a GPU machine) torch, deps, the package and its extensions
setup: $(VENV)/.setup-done
$(VENV)/.setup-done: setup.py requirements.txt constraints.txt $(NATIVE)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q torch==2.13.0
	$(PIP) -r requirements.txt
	$(PIP) --no-deps mediapipe==0.10.21
	$(PIP) --no-build-isolation --no-deps -e .
	touch $@

## demo: the main job (README)
demo: setup
	$(BIN)/avatar demo

## test: the import rules (lint-imports, docs/architecture.md), then the default CPU test suite (README);
## GPU tests skip without a GPU
test-setup: setup
	$(PIP) -r requirements-test.txt
	./scripts/install-test-system-deps.sh
test: test-setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

## cuda-check: compile every CUDA kernel source with nvcc -c (no GPU needed, seconds)
cuda-check:
	./scripts/cuda-check.sh

## cuda-build: build, link and import avatar._C_cuda (sm_80/sm_90) against a CUDA torch kept in
## ~/.cache/avatar/cuda-venv (no GPU needed; first run 5-7 min on 2 cores, then ~20 s; see the script)
cuda-build:
	./scripts/cuda-build.sh

clean:
	rm -rf build $(VENV) *.egg-info avatar/*.so
