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

.PHONY: install demo demo-isic2024 test test-all rehearse clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(TF_EXTRA),jax,dev]"
	touch $@

demo: install
	$(BIN)/melanoma run --config configs/demo.yaml

# ISIC 2024: a synthetic set in the competition's layout (HDF5 tiles, tbp_lv_* metadata), then every stage on it.
demo-isic2024: install
	test -f data/isic2024_demo/train-metadata.csv || $(BIN)/python scripts/make_isic2024_demo.py --out data/isic2024_demo
	$(BIN)/melanoma run --config configs/isic2024_demo.yaml

test: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n 2 --dist loadfile  # two workers on two cores; a test file stays on one (module fixtures)

test-all: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -m "slow or not slow" -n 2 --dist loadfile  # 21 min on 2 cores (57 serially)

rehearse: install
	$(BIN)/python scripts/rehearse.py

clean:
	rm -rf runs/demo tfrecords/demo submissions/submission.csv submissions/blend.json
	rm -rf runs/isic2024_demo tfrecords/isic2024_demo submissions/isic2024_submission.csv submissions/isic2024_blend.json
