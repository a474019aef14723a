# Two entry points, each idempotent and fast once set up:
#   make demo   -> .venv with torch + imaging (compiled ops built), then the main demo (figures in out/)
#   make test   -> same set-up, then the test suite (without the tests marked slow: make test PYTEST_ARGS= runs all)
#   make docs   -> same set-up, then the documentation site in site/ (mkdocs, strict)
# Options: make demo TORCH=torch==2.14.1   IMAGING_NO_EXT=1 make test (pure-torch fallback, no build)
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -m "not slow"
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' 2>/dev/null)

.PHONY: demo test docs setup build bench bench-peers gpu-check gpu-train-stage clean

demo: build
	$(PY) examples/reconstruct.py
	$(PY) examples/custom_operator.py
	$(PY) examples/tv_reconstruction.py --size 128
	$(PY) examples/sensor_array_calibration.py --phase-transition
	$(PY) examples/learned_priors.py

test: build
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The documentation site (mkdocs-material, API reference by mkdocstrings) in site/; strict: broken references fail.
docs: build
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

DEPS := $(VENV)/.deps-$(subst =,_,$(subst /,_,$(TORCH)))
BUILT := $(VENV)/.built$(if $(IMAGING_NO_EXT),-noext,)

setup: $(DEPS)

# One stamp per torch spec: changing TORCH reinstalls torch and rebuilds the extension.
$(VENV)/.deps-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q ninja pybind11 pytest numpy scipy scikit-image scikit-learn matplotlib tqdm safetensors "diffusers>=0.31" "accelerate>=0.30" imageio tifffile click bm3d hypothesis \
		"mkdocs-material>=9.5" "mkdocstrings[python]>=0.25"
	rm -f $(VENV)/.deps-* $(VENV)/.built*
	touch $@

build: setup $(BUILT)

# IMAGING_NO_EXT=1 installs without compiling and removes a previously built imaging/_C*.so.
$(BUILT): $(DEPS) setup.py pyproject.toml $(CSRC)
	$(if $(IMAGING_NO_EXT),rm -f imaging/_C*.so,)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	rm -f $(VENV)/.built*
	$(PY) -c "import imaging, imaging._ext as e; print(e.describe())"
	touch $@

bench: build
	$(PY) benchmarks/finite_diff.py
	$(PY) benchmarks/tv_denoise.py
	$(PY) benchmarks/calibration.py
	$(PY) benchmarks/foe.py
	$(PY) benchmarks/generative.py

# The peer deepinv needs torchvision, which does not import beside the project's torch: it gets its own venv,
# which benchmarks/tv_denoise.py runs as a subprocess when present (about 5.5 GB).
bench-peers: .venv-deepinv/bin/python bench

.venv-deepinv/bin/python:
	$(PYTHON) -m venv .venv-deepinv
	.venv-deepinv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 deepinv scikit-image

# On a GPU machine: build with CUDA, run the CUDA tests and benchmarks, results in $${OUT:-gpu-results}/.
gpu-check:
	bash scripts/gpu_check.sh

# Before training on a GPU machine (scripts/gpu_train.sh): stage the training images and the pure-Python wheels it lacks.
gpu-train-stage:
	mkdir -p .gpu-data .gpu-wheels
	cp -r ../shared/datasets/train400 .gpu-data/
	$(PY) -m pip download -q --no-deps -d .gpu-wheels diffusers accelerate tqdm importlib_metadata
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .gpu-wheels safetensors psutil pyyaml regex

clean:
	rm -rf build imaging/_C*.so *.egg-info out
