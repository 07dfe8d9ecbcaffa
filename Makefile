# Two entry points for a fresh machine: `make all` (the workflow) and `make test`.
# Both bootstrap .venv from pyproject.toml first; pass workflow vars with ARGS.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,cpu
ARGS ?=

.PHONY: all demo test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

all: $(BIN)/.installed
	$(BIN)/python -m spacy project run all . $(ARGS)

demo: $(BIN)/.installed
	$(BIN)/python -m spacy project run demo . $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check scripts tests

clean:
	rm -rf corpus training metrics packages assets project.lock
