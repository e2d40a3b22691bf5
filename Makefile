# lrbench-pipeline: `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= $(CURDIR)/mlruns
HOST ?= 127.0.0.1
PORT ?= 5000
# Team server: the PostgreSQL cluster of `make postgres` if it exists, else the local SQLite store. The URI holds a
# password, so it reaches mlflow through the environment, never the command line or the log.
BACKEND ?= $(shell cat $(CURDIR)/.postgres/backend_uri 2>/dev/null || echo sqlite:///$(STORE)/mlflow.db)
ARTIFACTS ?= $(CURDIR)/mlruns/server-artifacts
SERVER_OPTS ?=

.DEFAULT_GOAL := help
.PHONY: help demo install data run ui postgres server test test-fast bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

demo: data install ## first contact: 13 LRBench policies on Fashion-MNIST (short, parallel), then the report
	@start=$$(date +%s); \
	$(BIN)/python -m pipeline +experiment=demo multirun || echo "(some runs failed: the report lists them as bad policies)"; \
	$(BIN)/python -m pipeline.report experiments=[lrbench-demo] target=0.80 baseline=inv out_dir=reports/demo && \
	echo "demo finished in $$(( $$(date +%s) - start )) s. Browse every run: make ui, then open http://$(HOST):$(PORT)"

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -c "import torch, torchvision, lightning, hydra, mlflow, sklearn"
	touch $@

install: $(BIN)/.installed ## create .venv with the package at the tested versions (constraints.txt)

data: ## install the offline data: Fashion-MNIST and the fortune cookies of task=language_model (Debian, needs root)
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "Fashion-MNIST present"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "run as root: apt-get install dataset-fashion-mnist (or let torchvision download it)"; fi
	@if [ -f /usr/share/games/fortunes/literature.dat ] && [ -f /usr/share/games/fortunes/computers.dat ]; then \
	  echo "fortunes present"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq fortunes; \
	else echo "run as root: apt-get install fortunes (the language-model task's text)"; fi

run: install ## train the default job (LeNet-5, Fashion-MNIST, 1 epoch) into the local store
	$(BIN)/python -m pipeline

ui: install ## browse every run: the MLflow UI on the local store (http://127.0.0.1:5000 by default)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(STORE)/mlflow.db --host $(HOST) --port $(PORT)

postgres: ## create (once) and start a local PostgreSQL for the team server; data in .postgres/
	bash scripts/postgres.sh init start

server: install ## the team MLflow server (127.0.0.1:5000 by default) on PostgreSQL (else SQLite), serving artifacts
	@echo "mlflow server: backend $$(echo '$(BACKEND)' | sed -E 's#//([^:/@]+):[^@]*@#//\1:****@#'), artifacts $(ARTIFACTS)"
	@MLFLOW_BACKEND_STORE_URI='$(BACKEND)' $(BIN)/mlflow server --artifacts-destination '$(ARTIFACTS)' --serve-artifacts \
	  --host $(HOST) --port $(PORT) --workers 2 $(SERVER_OPTS)

test: install ## run the whole test suite (slow end-to-end tests included)
	$(BIN)/python -m pytest -q

test-fast: install ## run the tests not marked slow
	$(BIN)/python -m pytest -q -m "not slow"

bench: install ## the benchmark suite with its targets (~36 min on 2 cores); writes BENCHMARKS.md and bench/results/
	$(BIN)/python benchmarks/lca_overhead.py
	-$(BIN)/python benchmarks/packed.py
	$(BIN)/python benchmarks/suite.py

clean: ## remove outputs of runs (keeps the MLflow store)
	rm -rf outputs multirun .pytest_cache
