# One command per job. Every target bootstraps what it needs (virtualenv, DynamoDB Local), so a fresh
# machine with Python 3.11, make, Java and npm needs nothing else.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
DDB_LOCAL_VERSION := 2.9.30
DDB_LOCAL := .local/ddb/node_modules/amplify-dynamodb-simulator/emulator/DynamoDBLocal.jar
PYTEST_ARGS ?=

.PHONY: help venv ddb-local lint format test test-unit demo bench soak local-up emulator sam-validate clean

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,cli]'
	# python-quickbooks pins intuit-oauth==1.2.6; it is only a test/bench client, so install it without its pins.
	$(BIN)/pip install -q --no-deps 'python-quickbooks==0.9.12'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## Create/refresh the virtualenv (.venv)

$(DDB_LOCAL):
	@if command -v java >/dev/null && command -v npm >/dev/null; then \
	  mkdir -p .local/ddb && npm install --silent --prefix .local/ddb amplify-dynamodb-simulator@$(DDB_LOCAL_VERSION) >/dev/null 2>&1 \
	  || echo "DynamoDB Local could not be installed; the local stack will fall back to moto for DynamoDB"; \
	else echo "java or npm missing; the local stack will fall back to moto for DynamoDB"; fi

ddb-local: $(DDB_LOCAL) ## Fetch DynamoDB Local (from the npm registry) into .local/

lint: venv ## ruff + mypy --strict on shared/ and functions/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv ## Apply ruff formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: venv ddb-local ## The whole suite: unit, template checks, integration, e2e
	$(BIN)/pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test-unit: venv ## Unit tests only (no network, seconds)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

demo: venv ddb-local ## Start the local stack and replay a physical-therapy week (add ARGS=--serve to keep it up)
	$(BIN)/qbsync demo $(ARGS)

bench: venv ddb-local ## Benchmarks: prints a table, writes bench/results/*.json
	$(BIN)/python -m bench $(ARGS)

soak: venv ddb-local ## Chaos soak (long): prints a report, writes bench/results/soak.json
	$(BIN)/python -m bench.soak $(ARGS)

local-up: venv ddb-local ## Run the local stack in the foreground (Ctrl-C stops it)
	$(BIN)/qbsync local up $(ARGS)

emulator: venv ## Run the QBO emulator on its own
	$(BIN)/qbsync emulator $(ARGS)

sam-validate: venv ## cfn-lint on template.yaml and on its SAM-transformed output
	$(BIN)/python -m infra.template_check

# sam build (BuildMethod: makefile): copy only the shared package and the one function, plus runtime deps.
build-%Function:
	mkdir -p $(ARTIFACTS_DIR)/functions
	cp -r shared $(ARTIFACTS_DIR)/shared
	fn=$$(echo '$*' | sed -E 's/([a-z0-9])([A-Z])/\1_\2/g' | tr 'A-Z' 'a-z'); \
	  cp functions/__init__.py $(ARTIFACTS_DIR)/functions/ && cp -r functions/$$fn $(ARTIFACTS_DIR)/functions/$$fn
	python3 -m pip install -q --target $(ARTIFACTS_DIR) -r requirements-lambda.txt
	find $(ARTIFACTS_DIR) -name '__pycache__' -prune -exec rm -rf {} +

clean: ## Remove the virtualenv, local data and build output
	rm -rf $(VENV) .local .aws-sam bench/results
