# The two commands a new user needs: `make run` and `make test`. CI runs `make test` (see .ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 4000
# The demo's master key: local only (the gateway refuses weak keys on non-loopback addresses).
DEMO_KEY ?= sk-lockgate-demo-local-only

.PHONY: run test lint typecheck unit bench install dev clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

run: install
	@echo "lockgate demo on http://$(HOST):$(PORT)  (master key: $(DEMO_KEY))"
	@echo "try:  curl http://$(HOST):$(PORT)/v1/chat/completions -H 'Authorization: Bearer $(DEMO_KEY)' \\"
	@echo "        -H 'Content-Type: application/json' -d '{\"model\": \"demo\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'"
	LITELLM_MASTER_KEY=$(DEMO_KEY) $(BIN)/lockgate serve --demo --host $(HOST) --port $(PORT)

lint: dev
	$(BIN)/ruff check lockgate tests bench scripts
	$(BIN)/ruff format --check lockgate tests bench scripts

typecheck: dev
	$(BIN)/mypy

unit: dev
	$(BIN)/python -m pytest -q

test: lint typecheck unit

bench: dev
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
