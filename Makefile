# make demo: install into .venv (if needed) and run every stage on the shipped demo images.
# make test: install the same way, check the import layers (lint-imports) and run the fast tests; make test-all: every test (what CI runs), the
# rehearsals included. make rehearse: the Kaggle notebook executed on Kaggle's and Colab's package sets
# (scripts/rehearse.py; about 15 minutes the first time, which builds the images' virtualenvs in .rehearse/).
PYTHON ?= python3
VENV ?= .venv
# cpu by default (a local tensorflow-cpu wheel); `make demo TF_EXTRA=gpu` installs tensorflow[and-cuda].
TF_EXTRA ?= cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(TF_EXTRA)

.PHONY: install demo test test-all rehearse clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(TF_EXTRA),jax,dev]"
	touch $@

demo: install
	$(BIN)/melanoma run --config configs/demo.yaml

test: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -m "slow or not slow"

rehearse: install
	$(BIN)/python scripts/rehearse.py

clean:
	rm -rf runs/demo tfrecords/demo submissions/submission.csv submissions/blend.json
