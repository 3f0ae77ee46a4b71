# Set-up and entry points. `make demo` trains on the bundled galaxies; `make test` runs the tests.
# Both create the virtual environment in .venv on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# PyTorch is installed first and on its own, so a site with its own build can override it:
#   make demo TORCH_SPEC="torch==2.5.1 torchvision==0.20.1"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
RUN_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)
# Extra notebook parameters, e.g. a smoke run: make demo NOTEBOOK_ARGS="-p max_steps 3"
NOTEBOOK_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup demo test clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e ".[test]"
	touch $@

demo: setup
	@if [ -e "$(RUN_DIR)/train.ipynb" ]; then \
		echo "$(RUN_DIR)/train.ipynb exists; choose another RUN_DIR so that notebook is kept"; exit 1; fi
	mkdir -p $(RUN_DIR)
	$(BIN)/papermill notebooks/train.ipynb $(RUN_DIR)/train.ipynb -p run_dir $(RUN_DIR) $(NOTEBOOK_ARGS)
	@echo "Run finished: metrics in $(RUN_DIR)/metrics.json, executed notebook $(RUN_DIR)/train.ipynb"

test: setup
	$(BIN)/ruff check galaxalign widgets tests benchmarks scripts
	$(BIN)/pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
