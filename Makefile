# ortho-book: `make book` builds the book (executing every chapter), `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHAPTERS := $(shell grep -l 'format_name: myst' book/*.md)
NOTEBOOKS := $(CHAPTERS:.md=.ipynb)
export PYTHONHASHSEED := 0
# The one place that sets the thread count of torch's (and BLAS's) small operations for the book and the
# tests: one thread. The chapters' tensors are small, one thread is as fast, and on a busy 2-core machine a
# second OpenMP thread makes each tiny product wait for a descheduled partner. (The fused backend runs its
# own threads over networks, one per core: ortho_lib._fused.workers_default.)
export OMP_NUM_THREADS := 1
# Idle OpenMP threads must sleep, not spin: on a busy 2-core machine spinning slows torch tenfold.
export OMP_WAIT_POLICY := PASSIVE
# The same arithmetic on every x86-64 machine with AVX2 and FMA, so that the stored outputs, which nbval
# compares digit for digit, do not depend on the processor: each library that picks its kernels by CPU
# (OpenBLAS under NumPy and SciPy, MKL and ATen under torch, oneDNN, NumPy's own SIMD loops, Numba's code
# generation) is held to its AVX2 kernels. Measured on this book: unpinned, an AMD EPYC and an Intel Xeon
# differ in the last digits of most stored numbers, and in the second decimal of the max-margin networks
# of `kkt_nonrobust`, whose late phase amplifies rounding. Glue rounds floats to six significant digits
# and that chapter leaves its processor-dependent digits out of nbval's comparison; so the pins are the
# second line: with them lifted on the AMD machine (its AVX-512 kernels), every stored output computed
# under them still passed nbval. (`make bench` lifts them: it measures the engine at full speed.)
# The stored outputs were computed on x86-64; on another architecture nothing is pinned (the names would
# mean nothing there), and only the glue rounding and the uncompared cells stand between nbval and them.
PINS := OPENBLAS_CORETYPE MKL_CBWR ATEN_CPU_CAPABILITY ONEDNN_MAX_CPU_ISA NPY_DISABLE_CPU_FEATURES \
        NUMBA_CPU_NAME NUMBA_CPU_FEATURES
ifeq ($(shell uname -m),x86_64)
export OPENBLAS_CORETYPE := Haswell
export MKL_CBWR := AVX2
export ATEN_CPU_CAPABILITY := avx2
export ONEDNN_MAX_CPU_ISA := AVX2
export NPY_DISABLE_CPU_FEATURES := X86_V4 AVX512_ICL AVX512_SPR
export NUMBA_CPU_NAME := haswell
export NUMBA_CPU_FEATURES :=
endif
# No progress bars in anything make runs (built book, stored outputs, tests): ortho_lib.progress draws
# them only for a person running a chapter interactively.
export ORTHO_PROGRESS := 0

.PHONY: book test notebooks chapter colab env clean bench chapter-times

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
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist loadscope \
	  --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	  tests $(NOTEBOOKS)

# Re-write every .ipynb from its .md and execute it in place (run after editing a chapter), then
# regenerate the readable notebooks. One OpenMP thread, as under `make test`: multi-threaded reductions
# change the last digits of some stored numbers from run to run, and nbval compares them exactly.
notebooks: $(STAMP)
	for f in $(CHAPTERS); do OMP_NUM_THREADS=1 $(BIN)/jupytext --to ipynb --execute $$f || exit 1; done
	$(BIN)/python book/_ext/readable_notebooks.py

# One chapter only: `make chapter NAME=setting` executes book/setting.md into book/setting.ipynb and
# regenerates book/colab/setting.ipynb.
chapter: $(STAMP)
	@test -n "$(NAME)" || { echo "usage: make chapter NAME=<one of: $(notdir $(CHAPTERS:.md=))>"; exit 2; }
	@test -f book/$(NAME).md || { echo "book/$(NAME).md does not exist"; exit 2; }
	OMP_NUM_THREADS=1 $(BIN)/jupytext --to ipynb --execute book/$(NAME).md
	$(BIN)/python book/_ext/readable_notebooks.py $(NAME)

# The readable notebooks for Colab and Jupyter (book/colab/<chapter>.ipynb), from each chapter's .md and
# its executed .ipynb: no execution, a few seconds. A test fails when they are stale.
colab: $(STAMP)
	$(BIN)/python book/_ext/readable_notebooks.py

# Benchmark of the training engine against the strongest references (a few minutes; see bench/README.md).
bench: $(STAMP)
	env -u OMP_WAIT_POLICY -u OMP_NUM_THREADS $(addprefix -u ,$(PINS)) $(BIN)/python bench/bench_engine.py

# Seconds each chapter takes to execute, against the book's 8-minute budget (see bench/README.md).
chapter-times: $(STAMP)
	$(BIN)/python bench/chapter_times.py

clean:
	rm -rf _build
