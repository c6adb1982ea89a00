# gallerytag: two commands for a newcomer, `make demo` and `make test`; both run `make setup` first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gallerytag-setup
DEMO_DIR ?= demo-output
DEMO_PER_CLASS ?= 300
PYTEST_ARGS ?=

.PHONY: setup browser demo demo-data test test-fast lint format bench compile pipeline-local images lock clean

## setup: create .venv, install the pinned stack, build Horovod (cached), and Debian's chromium
## for the review page's browser test where we may install it; a no-op when up to date
setup: $(STAMP) browser

$(STAMP): requirements.txt constraints.txt pyproject.toml third_party/horovod/build.sh third_party/horovod/xla-gpu-only.patch
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip==25.3"
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	bash third_party/horovod/build.sh $(VENV)
	$(PY) -m pip check
	@touch $@
	@echo "setup: done ($(VENV))"

## browser: Debian's chromium for tests/test_review_browser.py (Playwright drives it; its own
## browser download is never used). Without root or apt-get the test skips and says why.
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; }; } || \
	  echo "setup: chromium is not installed; the review page's browser test will skip"

## demo: build a Fashion-MNIST gallery, ingest -> train (horovodrun -np 2) -> evaluate -> promote -> tag
demo: setup demo-data
	$(VENV)/bin/gallerytag demo --out $(DEMO_DIR) --per-class $(DEMO_PER_CLASS)

## demo-data: Debian's Fashion-MNIST package where we may install it (else Keras downloads it)
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
demo-data:
	@test -f $(FASHION) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }; }; } || \
	  echo "demo: dataset-fashion-mnist is not installed; Keras will try to download Fashion-MNIST"

## test: the whole test suite (what CI runs)
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

## test-fast: skip the minutes-long tests marked slow
test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## bench: every benchmark of docs/benchmarks.md, one after the other (about 1.5 h on 2 cores)
bench: setup
	$(PY) bench/train_input.py
	$(PY) bench/backbones.py
	$(PY) bench/ingest.py --images 20000 --small 5000
	$(PY) bench/ingest_memory.py --base 20000 --copies 5
	$(PY) bench/tag.py --images 20000 --small 5000
	$(PY) bench/tag_memory.py --small 10000 --base 20000 --copies 5

## compile: write the KFP pipelines (training.yaml, tagging.yaml) to build/pipelines
compile: setup
	$(VENV)/bin/gallerytag pipeline compile --out build/pipelines

## pipeline-local: the training pipeline end to end with KFP's local runner (no cluster)
pipeline-local: setup demo-data
	$(VENV)/bin/gallerytag pipeline run --local --work-dir build/pipeline-local

## images: build the CPU and GPU images where a container engine exists
IMAGE ?= gallerytag
ENGINE := $(shell command -v docker || command -v podman)
images:
	@test -n "$(ENGINE)" || { echo "images: no docker or podman on this machine"; exit 1; }
	$(ENGINE) build -t $(IMAGE):cpu -f Dockerfile .
	$(ENGINE) build -t $(IMAGE):gpu -f Dockerfile.gpu .

## lock: re-resolve constraints.txt from requirements.txt (needs the package registry)
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q -r requirements.txt
	.lock-venv/bin/pip freeze > constraints.txt && rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(DEMO_DIR) local_outputs build
