# Two commands do everything on a fresh machine:
#   make demo   set up .venv, then run the whole pipeline on the built-in digits data
#   make test   set up .venv, then run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch that lies on the dev/CI machines. Installed *before* anything else so
# that no dependency pulls a multi-GB CUDA build. On a GPU cluster, install your CUDA torch
# first and run `make setup TORCH_SPEC=` (empty: keep the torch you have).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.ganforge-setup

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install -q "$(TORCH_SPEC)"; fi
	# deepspeed is an sdist whose setup.py imports torch: build it against the torch above.
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q --no-build-isolation "deepspeed>=0.15"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# PATH: as with the venv activated (tools such as `mlflow models serve` exec uvicorn from PATH)
demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ganforge run

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q --durations=15 tests

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) work
