# veza-canary. `make demo` runs the main job on the local lab; `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install test test-unit test-integration acceptance lint demo deploy-canary lab-up lab-down bench soak clean

install:
	bash scripts/bootstrap.sh

# Everything CI runs: lint, unit tests, integration tests on the real lab, the staging acceptance job.
test: install
	bash scripts/run-tests.sh $(PYTEST_ARGS)

test-unit: install
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

test-integration: install
	$(BIN)/pytest tests/integration -q $(PYTEST_ARGS)

acceptance: install
	bash scripts/staging-acceptance.sh

lint: install
	$(BIN)/ruff check veza_canary tests bench scripts

# The main job on the local lab: bring it up, deploy a good build, then a faulty one that rolls back.
demo: install
	bash scripts/demo.sh

# The runbook's one-shot: make deploy-canary ARTIFACT=/tmp/veza-api-v1.0.10 (any knob may be exported;
# DEPLOY_ARGS passes flags, e.g. DEPLOY_ARGS=--dry-run).
# ARTIFACT and DEPLOY_ARGS reach the script through the environment, never through the recipe's shell text:
# `$(value ...)` takes them unexpanded (a `$(shell ...)` in the value is not run) and `:=` keeps them so when
# exported; the recipe only says "$$ARTIFACT". The script splits DEPLOY_ARGS into words, without a shell.
deploy-canary: override export ARTIFACT := $(value ARTIFACT)
deploy-canary: override export DEPLOY_ARGS := $(value DEPLOY_ARGS)
deploy-canary:
	@test -n "$$ARTIFACT" || { echo "usage: make deploy-canary ARTIFACT=/path/to/veza-api" >&2; exit 2; }
	@bash scripts/deploy-canary.sh

lab-up: install
	$(BIN)/veza-canary lab up

lab-down:
	$(BIN)/veza-canary lab down

bench: install
	bash bench/run.sh

soak: install
	bash scripts/soak.sh

clean:
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
