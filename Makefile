# Two entry points for a fresh machine: `make all` (the workflow) and `make test`.
# Both bootstrap .venv from pyproject.toml first; pass workflow vars with ARGS.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,cpu,onnx
ARGS ?=

.PHONY: all demo benchmarks test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

all: $(BIN)/.installed
	$(BIN)/python -m spacy project run all . $(ARGS)

demo: $(BIN)/.installed
	$(BIN)/python -m spacy project run demo . $(ARGS)

# After `make demo`: the HF Trainer recipe beside the CPU pipeline, then inference speed.
# On a GPU machine, after `make all`: `spacy project run benchmark-accuracy` and `benchmark-speed`.
CPU_VARS := --vars.model assets/all-MiniLM-L6-v2 --vars.gpu_id -1
benchmarks: $(BIN)/.installed
	$(BIN)/python -m spacy project run benchmark-accuracy . $(CPU_VARS) $(ARGS)
	$(BIN)/python -m spacy project run benchmark-speed . $(CPU_VARS) $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check scripts tests

clean:
	rm -rf corpus training metrics packages assets project.lock
