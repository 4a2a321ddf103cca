# mmseg-keyprotect: the commands people type.
#   make install   build .venv from nothing (torch, mmcv with ops from a cached wheel, the plugin)
#   make test      run the test suite (installs first if needed)
#   make test-unit only tests/unit (no Runner, no tool runs; about 2 minutes on 2 cores)
#   make demo      generate the synthetic dataset, train and evaluate under key conditions
#   make reproduce DATA=data/stanford_background
#                  the papers' comparisons on real photographs (docs/stanford_background.md);
#                  prepare DATA first: python tools/prepare_stanford_background.py SOURCE
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU wheel by default; for CUDA e.g. TORCH_SPEC='torch==2.1.2' TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cu121'
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
MMCV_VERSION ?= 2.1.0
# Built mmcv wheels are cached outside the clone so fresh clones (and CI) reuse them.
WHEEL_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/mmseg-keyprotect/wheels
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: install test test-unit test-all demo reproduce benchmark sweep clean

install: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip 'setuptools>=77,<81' wheel ninja
	$(PIP) install $(TORCH_PIP_ARGS) '$(TORCH_SPEC)'
	bash tools/install_mmcv.sh $(PY) $(MMCV_VERSION) $(WHEEL_CACHE)
	$(PIP) install -e '.[tests]'
	$(PY) -c "import mmseg_keyprotect, mmcv.ops; print('mmseg-keyprotect', mmseg_keyprotect.__version__, 'installed')"
	touch $(STAMP)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

demo: install
	$(PY) tools/demo.py

# Trains and tests every configs/stanford_background/ row (resumable: finished runs are skipped).
DATA ?= data/stanford_background
reproduce: install
	$(PY) tools/reproduce.py --data $(DATA) --docs docs/stanford_background \
		--page docs/stanford_background.md

benchmark: install
	$(PY) tools/benchmark.py all

sweep: install  # regenerate docs/architectures.md (every mmseg model family, points='auto')
	$(PY) tools/sweep_families.py

clean:
	rm -rf $(VENV) work_dirs data/synthetic_voc
