# The commands people and CI use. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
export VENV PYTHON
VPY := $(VENV)/bin/python
DATA_DIR ?= ./var
SHARED_TRAINING := ../shared/data/brain-mri/Training
# The labelled folder `make run` (first training run) and `make train` use; the shared
# public dataset beside the repository if it is there. Set it empty to train nothing.
TRAINING_DATA_DIR ?= $(if $(wildcard $(SHARED_TRAINING)),$(abspath $(SHARED_TRAINING)),)
export KERAS_BACKEND ?= tensorflow
PYTEST_ARGS ?=
BENCH_DATA ?= $(TRAINING_DATA_DIR)
BENCH_SCANS ?= 500
BENCH_BATCH ?= 32
TRAIN_ARGS ?=
TRAIN_STAMP := $(shell date -u +%Y%m%dT%H%M%SZ)
BUNDLE ?= $(DATA_DIR)/bundles/manual-$(TRAIN_STAMP)

.PHONY: help venv venv-dev run test lint bench bench-training train clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: ## create/refresh .venv with requirements.txt (skipped when up to date)
	@scripts/ensure_venv.sh run requirements.txt

venv-dev: ## create/refresh .venv with requirements-dev.txt too
	@scripts/ensure_venv.sh dev requirements.txt requirements-dev.txt

run: venv ## start web, worker, beat (+ a broker) on http://127.0.0.1:5000; Ctrl-C stops all
	@DATA_DIR="$(DATA_DIR)" TRAINING_DATA_DIR="$(TRAINING_DATA_DIR)" $(VPY) -m scripts.run_local $(RUN_ARGS)

test: venv-dev ## run the whole test suite (PostgreSQL and Redis must answer: see .ci/run)
	@scripts/run_tests.sh $(PYTEST_ARGS)

lint: venv-dev ## byte-compile everything; ruff too if it is installed
	@$(VPY) -m compileall -q config db models training tasks web workers scripts bench client tests
	@if $(VPY) -m ruff --version >/dev/null 2>&1; then $(VPY) -m ruff check .; \
	else echo "ruff is not installed in $(VENV): only byte-compiled (pip install ruff for more)"; fi

bench: venv-dev ## engine batched vs naive; whole service vs engine + status polls (PostgreSQL, Redis)
	@if [ -z "$(BENCH_DATA)" ]; then echo "set BENCH_DATA (or TRAINING_DATA_DIR) to a folder of scans"; exit 1; fi
	$(VPY) -m bench.inference --data "$(BENCH_DATA)" --batch-size $(BENCH_BATCH) $(BENCH_INFERENCE_ARGS)
	$(VPY) -m bench.service --data "$(BENCH_DATA)" --scans $(BENCH_SCANS) --batch-size $(BENCH_BATCH) \
	    $(BENCH_SERVICE_ARGS)

bench-training: venv-dev ## feature cache vs recomputing the backbone every epoch (ResNet50, 224 px: ~30 min)
	@if [ -z "$(BENCH_DATA)" ]; then echo "set BENCH_DATA (or TRAINING_DATA_DIR) to a labelled folder"; exit 1; fi
	$(VPY) -m bench.training --data "$(BENCH_DATA)" $(or $(BENCH_TRAINING_ARGS),--models resnet50 --epochs 12)

train: venv ## train all five models on TRAINING_DATA_DIR into a bundle under DATA_DIR/bundles
	@if [ -z "$(TRAINING_DATA_DIR)" ]; then echo "set TRAINING_DATA_DIR to a labelled folder (one subfolder per class)"; exit 1; fi
	$(VPY) -m training train --data "$(TRAINING_DATA_DIR)" --out "$(BUNDLE)" $(TRAIN_ARGS)
	@echo "register it with: $(VENV)/bin/flask --app web register-model $(BUNDLE) --activate"

clean: ## remove caches and build leftovers (keeps .venv and DATA_DIR)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info

distclean: clean ## also remove .venv (DATA_DIR with your database and bundles is kept)
	rm -rf $(VENV)
