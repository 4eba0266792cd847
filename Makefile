# One command sets up and runs: `make demo`, `make test`. Idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup demo test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: setup
	$(BIN)/emlive demo --out demo-output

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/stream_throughput.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
