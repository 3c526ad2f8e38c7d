# ortho-book: `make book` builds the book (executing every chapter), `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHAPTERS := $(shell grep -l 'format_name: myst' book/*.md)
NOTEBOOKS := $(CHAPTERS:.md=.ipynb)
export PYTHONHASHSEED := 0
# Idle OpenMP threads must sleep, not spin: on a busy 2-core machine spinning slows torch tenfold.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: book test notebooks env clean bench

env: $(STAMP)

# The virtual environment, rebuilt whenever the requirements or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Execute every chapter and build the HTML book into _build/html; any warning or failing cell fails.
book: $(STAMP)
	rm -rf _build/.doctrees _build/jupyter_execute
	$(BIN)/jupyter-book build --all -W -n --keep-going .

# Unit tests, theory checks on fresh seeds, the pairing check, and nbval on the stored outputs
# (two pytest workers, one thread each, on the 2-core machine).
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist loadscope \
	  --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	  tests $(NOTEBOOKS)

# Re-write every .ipynb from its .md and execute it in place (run after editing a chapter).
notebooks: $(STAMP)
	for f in $(CHAPTERS); do $(BIN)/jupytext --to ipynb --execute $$f || exit 1; done

# Benchmark of the sweep engine against the plain per-network reference (see bench/README.md).
bench: $(STAMP)
	env -u OMP_WAIT_POLICY $(BIN)/python bench/bench_engine.py

clean:
	rm -rf _build
