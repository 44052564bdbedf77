# Two entry points: `make dev` and `make test`. Everything installs from scratch into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
DEV_SERVER_PORT ?= 2024
DEV_MCP_PORT    ?= 8765
DEV_NOTES_PORT  ?= 8766

.PHONY: dev test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> installing onbehalf and its pinned dependencies into $(VENV)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	@touch $(STAMP)

## dev: the tickets (:8765) and notes (:8766, OAuth) MCP servers and `langgraph dev` on :2024, offline model
dev: $(STAMP)
	@DEV_SERVER_PORT=$(DEV_SERVER_PORT) DEV_MCP_PORT=$(DEV_MCP_PORT) DEV_NOTES_PORT=$(DEV_NOTES_PORT) $(BIN)/python -m onbehalf.devserver

## test: the whole suite; it starts its own Redis, MCP servers and langgraph dev on free ports
test: $(STAMP)
	@$(BIN)/ruff check .
	@$(BIN)/python -m pytest

lint: $(STAMP)
	@$(BIN)/ruff check .

$(BENCH_STAMP): $(STAMP) pyproject.toml
	@echo "==> installing the benchmark's extras (.[test,bench]) into $(VENV)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test,bench]"
	@touch $(BENCH_STAMP)

## bench: per-user MCP against a shared client and the floor, side by side (< 5 min;
## `make bench BENCH_ARGS=--quick` for a < 1 min smoke run); writes bench/results.json, bench/latency.png
bench: $(BENCH_STAMP)
	@$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .langgraph_api .pytest_cache
