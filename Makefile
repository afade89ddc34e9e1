# Two commands do all the set-up on a fresh machine:
#   make repro   install, build the demo dataset, run the whole pipeline (dvc repro)
#   make test    install, run the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

DEMO_DIR := data/raw/demo
DEMO_DONE := data/raw/.demo-complete

.PHONY: install demo repro test bench clean-demo

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# The demo is generated only for `make repro`; a user with their own data never pays for it.
demo: $(DEMO_DONE)

$(DEMO_DONE): oddpipe/demo.py scripts/make_demo.py | install
	rm -rf $(DEMO_DIR)
	$(BIN)/python scripts/make_demo.py $(DEMO_DIR) data/raw/demo_truth.json
	touch $@

repro: install demo
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show metrics/eval.json

test: install
	$(BIN)/python -m pytest -q tests

bench: install demo
	$(BIN)/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(BIN)/python bench/outliers_quality.py
	$(BIN)/python bench/stage_times.py
	$(BIN)/python bench/throughput.py

clean-demo:
	rm -rf $(DEMO_DIR) $(DEMO_DONE) data/raw/demo_truth.json
