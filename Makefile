# mmseg-keyprotect: the commands people type.
#   make install   build .venv from nothing (torch, mmcv with ops from a cached wheel, the plugin)
#   make test      run the test suite (installs first if needed)
#   make test-unit only tests/unit (no Runner, no tool runs; about 2 minutes on 2 cores)
#   make demo      generate the synthetic dataset, train and evaluate under key conditions
#   make sweep     regenerate docs/architectures.md in .venv-families (the families extra: mmdet,
#                  mmpretrain, Stable Diffusion's ldm); make sweep FAMILIES="san vpd" regenerates
#                  only those rows
#   make reproduce DATA=data/stanford_background [JOBS=2]
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
JOBS ?= 2
reproduce: install  # two runs at a time by default (one per core): JOBS=1 for one
	$(PY) tools/reproduce.py --data $(DATA) --jobs $(JOBS) --docs docs/stanford_background \
		--readme README.md \
		--page docs/stanford_background.md

benchmark: install
	$(PY) tools/benchmark.py all

# The sweep of every model family needs the `families` extra (mmdet, mmpretrain) and, for
# mmpretrain, a torchvision built for the installed torch. PyPI's torchvision does not import
# beside the CPU-only torch wheel `make install` may take from a local wheel directory
# ("operator torchvision::nms does not exist"), so the sweep gets a venv of its own with the
# registry's torch and torchvision of the same versions (a CUDA build; it runs on the CPU, with
# the CPU build of mmcv's ops for that torch version), and Stable Diffusion's `ldm` for VPD.
FAMILIES_VENV ?= .venv-families
FAMILIES_TORCH_SPEC ?= torch==2.13.0 torchvision==0.28.0
# pip without config files or local wheel directories, so that it takes the registry's torch build
FAMILIES_PIP_ENV ?= PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS=
FAMILIES_PY := $(FAMILIES_VENV)/bin/python
FAMILIES_STAMP := $(FAMILIES_VENV)/.installed
# Stable Diffusion's `ldm` package (VPD), without its pins (see setup.py's families extra)
SDKIT_SPEC ?= stable-diffusion-sdkit==2.1.5
# families to sweep, e.g. FAMILIES="san vpd": only their rows of docs/architectures.md change
FAMILIES ?=

$(FAMILIES_STAMP): setup.py
	$(PYTHON) -m venv $(FAMILIES_VENV)
	$(FAMILIES_PY) -m pip install --upgrade pip 'setuptools>=77,<81' wheel ninja
	$(FAMILIES_PIP_ENV) $(FAMILIES_PY) -m pip install $(FAMILIES_TORCH_SPEC)
	bash tools/install_mmcv.sh $(FAMILIES_PY) $(MMCV_VERSION) $(WHEEL_CACHE) cpu
	$(FAMILIES_PY) -m pip install -e '.[tests,families]'
	$(FAMILIES_PY) -m pip install --no-deps '$(SDKIT_SPEC)'
	$(FAMILIES_PY) -c "import torch, mmcv.ops, mmdet.models, mmpretrain.models, ldm.models.diffusion.ddpm; print('families venv: torch', torch.__version__, 'mmcv', mmcv.__version__)"
	touch $(FAMILIES_STAMP)

sweep: $(FAMILIES_STAMP)  # regenerate docs/architectures.md (every mmseg model family, points='auto')
	$(FAMILIES_PY) tools/dev/sweep_families.py $(if $(strip $(FAMILIES)),--update $(FAMILIES))

clean:
	rm -rf $(VENV) $(FAMILIES_VENV) work_dirs data/synthetic_voc
