# deepfast: `make test` and `make demo` set everything up on a fresh machine.
#
#   PYTHON=python3          interpreter that creates .venv
#   SYSTEM_PYTHON=1         use $(PYTHON) as it is, installing nothing from a registry (GPU machine)
#   TORCH_SPEC=torch==2.13.0  TRITON_SPEC=triton==3.7.*   what goes into .venv
#   PYTEST_ARGS=...         extra pytest arguments

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TRITON_SPEC ?= triton==3.7.*
PYTEST_ARGS ?=

ifeq ($(SYSTEM_PYTHON),1)
PY := $(PYTHON)
STAMPS := build/stamps-system
else
PY := $(VENV)/bin/python
STAMPS := $(VENV)/stamps
endif
CXX_SOURCES := $(wildcard csrc/*.h csrc/*.cpp csrc/cpu/*.h csrc/cpu/*.cpp csrc/cuda/*.cu csrc/cuda/*.cuh)
SOURCES := setup.py pyproject.toml $(CXX_SOURCES)
# The packages of an optional-dependency group of pyproject.toml, quoted for the shell.
extra = $(shell $(PYTHON) -c 'import shlex, tomllib; print(shlex.join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["$(1)"]))')

.PHONY: setup test fuzz demo bench docs lint triton-check cuda-check oldest-torch-check gpu-check gpu-check-dry clean
.DELETE_ON_ERROR:

setup: $(STAMPS)/installed

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/deps: pyproject.toml | $(if $(filter 1,$(SYSTEM_PYTHON)),,$(VENV)/bin/python)
	mkdir -p $(STAMPS)
ifneq ($(SYSTEM_PYTHON),1)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "$(TORCH_SPEC)" "$(TRITON_SPEC)" numpy tqdm scikit-learn scikit-image pillow matplotlib pytest pytest-benchmark pybind11 ninja
	# torchattacks: the tests' oracle. Without its declared torchvision (which does not import beside the
	# CPU torch) and requests: it imports neither; its scipy comes with scikit-learn.
	$(PY) -m pip install -q --no-deps "torchattacks==3.5.1"
endif
	touch $@

# Builds deepfast._C once (in place, editable install); rebuilt only when a source changes.
$(STAMPS)/installed: $(STAMPS)/deps $(SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The long forms of the fuzz tests (marked fuzz: random cases, SIGKILL-and-resume); `make test` runs
# them short.
fuzz: setup
	DEEPFAST_FUZZ=long $(PY) -m pytest -m fuzz $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/run.py

demo: setup
	$(PY) -m deepfast demo --out runs/demo

# Compiles every Triton kernel, in every specialization the wrappers launch, for sm_80 and sm_90 (no GPU
# needed) and inspects the generated code (.ci/triton_check.py).
triton-check: setup
	$(PY) .ci/triton_check.py

# Builds the CUDA kernels against the CUDA build of torch 2.14.1, in a venv and a build dir of
# their own under ~/.cache/deepfast (no GPU needed), and checks what got installed.
cuda-check:
	bash .ci/cuda_check.sh

# The same build and checks against the oldest torch deepfast supports, 2.11 (the GPU machine's), for
# sm_90 only: torch 2.11 from PyPI (530 MB), its CUDA libraries borrowed from the cuda-check venv.
OLDEST_TORCH ?= torch==2.11.0
oldest-torch-check:
	DEEPFAST_CUDA_VENV=$(HOME)/.cache/deepfast/oldest-torch-venv DEEPFAST_CUDA_BUILD=$(HOME)/.cache/deepfast/oldest-torch-build \
	DEEPFAST_CUDA_PACKAGES="$(OLDEST_TORCH)" DEEPFAST_CUDA_LIBS_FROM=$(HOME)/.cache/deepfast/cuda-venv \
	TORCH_CUDA_ARCH_LIST=9.0 bash .ci/cuda_check.sh

# The documentation site (mkdocs.yml, docs/) into site/, warnings as errors. Needs the docs tools only
# (mkdocstrings reads the sources; nothing is built or imported).
docs: $(STAMPS)/docs-deps
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# ruff's lint rules and both formatters' checks (pyproject.toml [tool.ruff], .clang-format).
CLANG_FORMAT := $(if $(filter 1,$(SYSTEM_PYTHON)),clang-format,$(VENV)/bin/clang-format)
lint: $(STAMPS)/lint-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(CLANG_FORMAT) --dry-run -Werror $(CXX_SOURCES)

$(STAMPS)/docs-deps $(STAMPS)/lint-deps: $(STAMPS)/%-deps: pyproject.toml | $(if $(filter 1,$(SYSTEM_PYTHON)),,$(VENV)/bin/python)
	mkdir -p $(STAMPS)
ifneq ($(SYSTEM_PYTHON),1)
	$(PY) -m pip install -q $(call extra,$*)
endif
	touch $@

clean:
	rm -rf build dist site *.egg-info deepfast/_C*.so $(VENV)

# On a lent GPU machine (no registry): the GPU runbook, results under benchmarks/results/<gpu>/.
gpu-check:
	bash benchmarks/gpu_check.sh

# The runbook's steps printed and what they need checked, without a GPU (also a test: tests/test_gpu_check.py).
gpu-check-dry: setup
	PYTHON=$(PY) bash benchmarks/gpu_check.sh --dry-run build tests sanitize bench rest
