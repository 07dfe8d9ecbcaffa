# Two entry points for a fresh machine: `make all` (the workflow) and `make test`.
# Both bootstrap .venv from pyproject.toml first; pass workflow vars with ARGS.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Where nvidia-smi lists a GPU, the gpu extra (all of the CPU extras plus cupy for the pinned torch's
# CUDA 13), so that `make all` trains there as it is; elsewhere the CPU extras. EXTRAS=... chooses.
CPU_EXTRAS := dev,cpu,ray,onnx,optimum,serve
GPU_FOUND := $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU' && echo yes)
EXTRAS ?= $(if $(GPU_FOUND),gpu,$(CPU_EXTRAS))
ARGS ?=
# One install stamp per set of extras: a new EXTRAS installs again.
comma := ,
INSTALLED := $(BIN)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: all demo benchmarks benchmark-context gpu-check test lint clean install

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(BIN)/.installed*
	touch $@

all: $(INSTALLED)
	$(BIN)/python -m spacy project run all . $(ARGS)

demo: $(INSTALLED)
	$(BIN)/python -m spacy project run demo . $(ARGS)

# After `make demo`: the HF Trainer recipe beside the CPU pipeline, then inference speed, worker processes, Ray,
# the HTTP server under load.
# On a GPU machine, after `make all`: `spacy project run benchmark-accuracy` and `benchmark-speed`.
CPU_VARS := --vars.model assets/all-MiniLM-L6-v2 --vars.gpu_id -1
benchmarks: $(INSTALLED)
	$(BIN)/python -m spacy project run benchmark-accuracy . $(CPU_VARS) $(ARGS)
	$(BIN)/python -m spacy project run benchmark-speed . $(CPU_VARS) $(ARGS)
	$(BIN)/python -m spacy project run benchmark-processes . $(ARGS)
	$(BIN)/python -m spacy project run benchmark-annotate-ray . $(ARGS)
	$(BIN)/python -m spacy project run benchmark-serve . $(ARGS)

# After `make demo` (needs its encoder in assets/): sentence mode against document context on the
# CPU proxy, two seeds each; some 40 minutes on 2 cores (README, "Document context").
benchmark-context: $(INSTALLED)
	$(BIN)/python -m spacy project run benchmark-context . $(CPU_VARS) --vars.config minilm_cpu $(ARGS)

# On a GPU machine (the gpu extra: chosen by itself where nvidia-smi lists a GPU, or EXTRAS=gpu): the GPU tests (tests/test_gpu.py:
# bert-base-shaped random encoder, `spacy project run all` in both doc modes, peak memory),
# then the speed benchmark on their sentence-mode pipeline beside a short HF recipe run on the
# same encoder, then one table (scripts/benchmarks/gpu_report.py). Stops first, in one message, without CUDA.
GPU_CHECK_DIR ?= gpu-check
GPU_CHECK_ABS = $(abspath $(GPU_CHECK_DIR))
GPU_CHECK_RUN = $(GPU_CHECK_ABS)/sentence/project
gpu-check: $(INSTALLED)
	$(BIN)/python -m scripts.benchmarks.gpu_report preflight
	rm -rf $(GPU_CHECK_ABS)
	GPU_CHECK_DIR=$(GPU_CHECK_ABS) $(BIN)/python -m pytest -m gpu tests/test_gpu.py $(ARGS)
	cd $(GPU_CHECK_RUN) && $(abspath $(BIN))/python -m scripts.benchmarks.hf_reference $(GPU_CHECK_ABS)/encoder corpus \
		training/hf_reference --epochs 1 --max-train-sentences 2000 --gpu-id 0
	$(BIN)/python -m spacy project run benchmark-speed $(GPU_CHECK_RUN) --vars.gpu_id 0 --vars.model $(GPU_CHECK_ABS)/encoder
	$(BIN)/python -m scripts.benchmarks.gpu_report report $(GPU_CHECK_ABS)

test: $(INSTALLED)
	$(BIN)/python -m pytest $(ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check scripts tests

clean:
	rm -rf corpus training metrics packages assets project.lock gpu-check
