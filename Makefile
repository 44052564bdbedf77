# Two entry points: `make dev` and `make test`. Everything installs from scratch into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
DEV_SERVER_PORT ?= 2024
DEV_MCP_PORT    ?= 8765
DEV_NOTES_PORT  ?= 8766
SERVE_PORT        ?= 2024
SERVE_WORKER_PORT ?= 2025

# Aegra (the production engine of DESIGN.md §10) needs Python 3.12: its own venv, pinned exactly
# the first candidate that really runs as 3.12 (a pyenv shim may exist without being usable)
AEGRA_CANDIDATES := $(shell command -v python3.12 2>/dev/null) \
  $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) /usr/bin/python3.12 /usr/local/bin/python3.12
AEGRA_PYTHON ?= $(firstword $(foreach p,$(AEGRA_CANDIDATES),$(shell "$(p)" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1 && echo $(p))))
AEGRA_VENV   := .venv-aegra
AEGRA_STAMP  := $(AEGRA_VENV)/.installed
AEGRA_PINS   := aegra-api==0.11.0 aegra-cli==0.11.0

.PHONY: dev test serve aegra lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> installing onbehalf and its pinned dependencies into $(VENV)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	@touch $(STAMP)

## dev: the tickets (:8765) and notes (:8766, OAuth) MCP servers and `langgraph dev` on :2024, offline model
dev: $(STAMP)
	@DEV_SERVER_PORT=$(DEV_SERVER_PORT) DEV_MCP_PORT=$(DEV_MCP_PORT) DEV_NOTES_PORT=$(DEV_NOTES_PORT) $(BIN)/python -m onbehalf.devserver

$(AEGRA_STAMP): pyproject.toml
	@if [ -z "$(AEGRA_PYTHON)" ] || ! "$(AEGRA_PYTHON)" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then \
	  echo "Aegra needs Python 3.12 and none was found (python3.12 on PATH, pyenv's 3.12): install it (e.g. pyenv install 3.12) or run make AEGRA_PYTHON=/path/to/python3.12 ..." >&2; exit 1; fi
	@test -x $(AEGRA_VENV)/bin/python || $(AEGRA_PYTHON) -m venv $(AEGRA_VENV)
	@echo "==> installing Aegra ($(AEGRA_PINS)) and onbehalf into $(AEGRA_VENV) (Python 3.12)"
	@$(AEGRA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(AEGRA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(AEGRA_PINS) -e .
	@touch $(AEGRA_STAMP)

aegra: $(AEGRA_STAMP)

## serve: production-shaped on one machine: Aegra (an API process and an API + worker process) on
## the local Postgres (database onbehalf) and Redis, the demo MCP servers, the offline model
serve: $(STAMP) $(AEGRA_STAMP)
	@SERVE_PORT=$(SERVE_PORT) SERVE_WORKER_PORT=$(SERVE_WORKER_PORT) DEV_MCP_PORT=$(DEV_MCP_PORT) \
	  DEV_NOTES_PORT=$(DEV_NOTES_PORT) $(BIN)/python -m onbehalf.serve

## test: the whole suite; it starts its own Redis, Postgres, MCP servers, langgraph dev and Aegra
## on free ports (the Aegra tests say so in the summary where Python 3.12 is missing)
test: $(STAMP)
	@$(MAKE) --no-print-directory aegra || echo "==> no Aegra venv: the Aegra tests will report that they did not run"
	@$(BIN)/ruff check .
	@$(BIN)/python -m pytest

lint: $(STAMP)
	@$(BIN)/ruff check .

$(BENCH_STAMP): $(STAMP) pyproject.toml
	@echo "==> installing the benchmark's extras (.[test,bench]) into $(VENV)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test,bench]"
	@touch $(BENCH_STAMP)

## bench: per-user MCP against a shared client and the floor, side by side (~8 min on 2 cores, 5 of
## them the 40 paired rounds through langgraph dev and Aegra; `make bench BENCH_ARGS=--quick` for a
## ~1 min smoke run); writes bench/results.json, bench/latency.png
## (its `engine` section runs on Aegra: the Aegra venv is built first whenever that section runs,
## i.e. unless --quick or --only leaves it out)
BENCH_RUNS_ENGINE = $(or $(findstring engine,$(BENCH_ARGS)),$(if $(findstring --only,$(BENCH_ARGS))$(findstring --quick,$(BENCH_ARGS)),,yes))
bench: $(BENCH_STAMP)
	@$(if $(BENCH_RUNS_ENGINE),$(MAKE) --no-print-directory aegra || echo "==> no Aegra venv: the engine section will say that it did not run",:)
	@$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(AEGRA_VENV) .langgraph_api .pytest_cache
