# Headrace: the two commands are `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.yaml
# `make run PORT=8081`: the API port (default: api.listen of $(CONFIG))
PORT   ?=
# pytest-xdist workers of `make test` (most tests wait on processes and the network, not the CPU;
# each worker has its own nats-server and databases)
TEST_WORKERS ?= 2

.PHONY: install run test test-cluster lint bench laddr-side-by-side clean

$(BIN)/headrace: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(BIN)/headrace

install: $(BIN)/headrace

run: install
	$(BIN)/headrace up --config $(CONFIG) $(if $(PORT),--port $(PORT))

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# three clustered nats-servers and two of each Headrace service, 10,000 jobs, a node of each kind
# SIGKILLed (tests/cluster; a few minutes)
test-cluster: install
	HEADRACE_TEST_CLUSTER=1 $(BIN)/python -m pytest tests/cluster -s

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy

bench: install
	$(BIN)/python -m bench --peers

# real Laddr 0.9.6 (installed from PyPI into a scratch venv) vs Headrace, same requests and fake LLM
laddr-side-by-side: install
	$(BIN)/python -m bench.laddr_side_by_side --report bench/laddr-side-by-side.md

clean:
	rm -rf $(VENV) .state .pytest_cache .mypy_cache
