# npugen: the two set-up commands are `make demo` and `make test`; both create .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= default
JOBS   ?= 2

.PHONY: demo test test-all docs lint clean distclean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: $(STAMP)
	$(BIN)/npugen demo --config $(CONFIG) -o build/demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) -q -m ""

docs: $(STAMP)
	$(BIN)/python -c "from gen.header import update_docs; update_docs()"

lint: $(STAMP)
	$(BIN)/ruff check hdl gen sim firmware tests benchmarks

clean:
	rm -rf build sim_build .pytest_cache .hypothesis

distclean: clean
	rm -rf $(VENV) *.egg-info
