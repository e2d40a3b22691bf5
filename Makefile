# lrbench-pipeline: `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= $(CURDIR)/mlruns
# Address `make ui` and `make server` listen on: loopback, unless `make ... HOST=0.0.0.0` on the command line. Not `?=`:
# a HOST exported by a shell or container must not open the UI to the network.
HOST := 127.0.0.1
PORT ?= 5000
# Store of `make ui` and `make server`: BACKEND if given, else $$MLFLOW_TRACKING_URI if set, else (server) the
# PostgreSQL cluster of `make postgres` if it exists, else the local SQLite store. The shell reads it, and it reaches
# mlflow through the environment: a password is in no command line and no log line (MASK_URI prints it masked).
BACKEND ?=
LOCAL_STORE := sqlite:///$(STORE)/mlflow.db
MASK_URI = URI="$$uri" $(BIN)/python -c 'import os; from pipeline.tracking.store import public_uri; print(public_uri(os.environ["URI"]))'
# Refuses an http(s) store: that is a tracking server already, with its own UI.
define STORE_URI
uri='$(BACKEND)'; uri="$${uri:-$${MLFLOW_TRACKING_URI:-$(1)}}"; \
case "$$uri" in http://*|https://*) echo "make $@: the store $$($(MASK_URI)) is a tracking server: open it in a \
browser, or set BACKEND=sqlite:///... or postgresql+psycopg2://... (or unset MLFLOW_TRACKING_URI)" >&2; exit 2;; esac
endef
ARTIFACTS ?= $(CURDIR)/mlruns/server-artifacts
SERVER_OPTS ?=

.DEFAULT_GOAL := help
.PHONY: help demo install data run ui postgres server test test-fast lint bench clean

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

ui: install ## browse every run: the MLflow UI on $MLFLOW_TRACKING_URI or the local store (http://127.0.0.1:5000)
	@$(call STORE_URI,$(LOCAL_STORE)); \
	echo "mlflow ui: store $$($(MASK_URI)) on http://$(HOST):$(PORT)"; \
	MLFLOW_BACKEND_STORE_URI="$$uri" exec $(BIN)/mlflow ui --host $(HOST) --port $(PORT)

postgres: ## create (once) and start a local PostgreSQL for the team server; data in .postgres/
	bash scripts/postgres.sh init start

server: install ## the team MLflow server (127.0.0.1:5000 by default) on $MLFLOW_TRACKING_URI, else PostgreSQL, else SQLite
	@$(call STORE_URI,$$(cat $(CURDIR)/.postgres/backend_uri 2>/dev/null || echo $(LOCAL_STORE))); \
	echo "mlflow server: backend $$($(MASK_URI)), artifacts $(ARTIFACTS), on http://$(HOST):$(PORT)"; \
	MLFLOW_BACKEND_STORE_URI="$$uri" exec $(BIN)/mlflow server --artifacts-destination '$(ARTIFACTS)' \
	  --serve-artifacts --host $(HOST) --port $(PORT) --workers 2 $(SERVER_OPTS)

test: install lint ## lint, then run the whole test suite (slow end-to-end tests included)
	$(BIN)/python -m pytest -q

lint: install ## ruff with the rules in pyproject.toml (pyflakes, pycodestyle, bugbear, import order, pyupgrade)
	$(BIN)/ruff check pipeline hydra_plugins tests benchmarks examples

test-fast: install ## run the tests not marked slow
	$(BIN)/python -m pytest -q -m "not slow"

bench: install ## the benchmark suite with its targets (~2 h on 2 cores); writes BENCHMARKS.md and bench/results/
	$(BIN)/python benchmarks/lca_overhead.py
	-$(BIN)/python benchmarks/packed.py
	$(BIN)/python benchmarks/suite.py
	$(BIN)/python benchmarks/pruning.py
	$(BIN)/python benchmarks/dead_server.py --steps 600 --repeats 5

clean: ## remove outputs of runs (keeps the MLflow store)
	rm -rf outputs multirun .pytest_cache
