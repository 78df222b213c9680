# The two set-up commands of the README: `make demo` and `make test`.
# Both create (or reuse) a local virtualenv in .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch and torchvision must be installed together as a matching pair. The default build
# from PyPI carries CUDA (about 5.8 GB with its nvidia-* wheels) and runs on CPU too; a
# CPU-only machine can take PyTorch's much smaller CPU wheels instead (not reachable from our CI):
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_PAIR := "torch==2.14.1" "torchvision==0.29.2"
TORCH_INDEX ?=
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-all clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_PAIR)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/seqvae demo

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check seqvae tests tools
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

clean-venv:
	rm -rf $(VENV)
