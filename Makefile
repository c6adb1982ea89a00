# gallerytag: two commands for a newcomer, `make demo` and `make test`; both run `make setup` first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gallerytag-setup
DEMO_DIR ?= demo-output
DEMO_PER_CLASS ?= 300
PYTEST_ARGS ?=

.PHONY: setup browser demo demo-data test screenshots test-fast lint format bench bench-quality compile pipeline-local images image-tools image-cpu image-gpu push lock clean

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

## screenshots: rerun the browser tests, writing their screenshots to docs/images/
screenshots: setup
	GALLERYTAG_SCREENSHOTS=$(CURDIR)/docs/images $(PY) -m pytest $(PYTEST_ARGS) \
		tests/test_evaluate.py::test_report_in_headless_chromium \
		tests/test_review_browser.py \
		tests/test_mlflow_lineage.py::test_mlflow_ui_shows_runs_dataset_and_report

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

## bench-quality: default recipe vs its linear probe, 5 galleries x 3 split seeds (hours on 2 cores)
bench-quality: setup demo-data
	$(PY) bench/quality.py

## compile: write the KFP pipelines (training.yaml, tagging.yaml) to build/pipelines, with the
## image `make images` / `make push` recorded in build/images/cpu.ref (GALLERYTAG_IMAGE wins)
compile: setup
	@ref="$${GALLERYTAG_IMAGE:-$$(cat $(IMAGE_REF) 2>/dev/null)}"; \
	  if [ -n "$$ref" ]; then export GALLERYTAG_IMAGE="$$ref"; fi; \
	  echo "compile: image $${GALLERYTAG_IMAGE:-(default of pipelines/components.py)}"; \
	  $(VENV)/bin/gallerytag pipeline compile --out build/pipelines

## pipeline-local: the training pipeline end to end with KFP's local runner (no cluster)
pipeline-local: setup demo-data
	$(VENV)/bin/gallerytag pipeline run --local --work-dir build/pipeline-local

## images: build the CPU and GPU images with docker (when its daemon answers) or podman/buildah
## (no daemon; k8s/images/build-local.sh makes a local base when the public one cannot be
## pulled). build/images/cpu.ref then names the CPU image; `make compile` puts it in the pipelines.
IMAGE ?= gallerytag
IMAGE_REF := build/images/cpu.ref
ENGINE = $(shell if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker; \
  elif command -v podman >/dev/null && command -v buildah >/dev/null; then echo podman; fi)
images: image-cpu image-gpu

## image-tools: podman, buildah and what they need here, where we may install them (root + apt)
IMAGE_TOOLS := buildah podman runc debootstrap uidmap fuse-overlayfs
image-tools:
	@[ "$(ENGINE)" = docker ] || command -v buildah >/dev/null && command -v podman >/dev/null && command -v runc >/dev/null && \
	  command -v debootstrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(IMAGE_TOOLS) >/dev/null 2>&1 || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(IMAGE_TOOLS) >/dev/null; }; }; } || \
	  echo "images: podman/buildah not installed and cannot install them here ($(IMAGE_TOOLS))"

image-cpu: image-tools
	@mkdir -p $(dir $(IMAGE_REF))
	@case "$(ENGINE)" in \
	  docker) docker build -t $(IMAGE):cpu -f Dockerfile . ;; \
	  podman) bash k8s/images/build-local.sh cpu $(IMAGE):cpu ;; \
	  *) echo "images: neither a docker daemon nor podman+buildah here;" \
	       "install podman: apt-get install buildah podman runc debootstrap uidmap fuse-overlayfs"; exit 1 ;; \
	esac
	@echo "$(IMAGE):cpu" > $(IMAGE_REF)
	@echo "images: $(IMAGE):cpu built; $(IMAGE_REF) names it for make compile"

## image-gpu: needs the tensorflow/tensorflow GPU base; where it cannot be pulled it is not built
## (said, not failed) unless GPU_IMAGE=required
GPU_IMAGE ?= optional
image-gpu: image-tools
	@case "$(ENGINE)" in \
	  docker) docker build -t $(IMAGE):gpu -f Dockerfile.gpu . ;; \
	  podman) bash k8s/images/build-local.sh gpu $(IMAGE):gpu || \
	    { rc=$$?; [ $$rc = 3 ] && [ "$(GPU_IMAGE)" != required ] || exit $$rc; } ;; \
	  *) echo "images: neither a docker daemon nor podman+buildah here"; exit 1 ;; \
	esac

## push: push $(IMAGE):cpu and :gpu (IMAGE=REGISTRY/PATH/gallerytag); cpu.ref becomes the digest
push:
	@test -n "$(ENGINE)" || { echo "push: no docker daemon or podman here"; exit 1; }
	@mkdir -p $(dir $(IMAGE_REF))
	@if [ "$(ENGINE)" = podman ]; then \
	  podman push --digestfile build/images/cpu.digest $(IMAGE):cpu && \
	  echo "$(IMAGE)@$$(cat build/images/cpu.digest)" > $(IMAGE_REF); \
	else \
	  docker push $(IMAGE):cpu && \
	  docker image inspect --format '{{index .RepoDigests 0}}' $(IMAGE):cpu > $(IMAGE_REF); \
	fi
	@! $(ENGINE) image inspect $(IMAGE):gpu >/dev/null 2>&1 || $(ENGINE) push $(IMAGE):gpu
	@echo "push: $(IMAGE_REF) = $$(cat $(IMAGE_REF))"

## lock: re-resolve constraints.txt from requirements.txt (needs the package registry)
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q -r requirements.txt
	.lock-venv/bin/pip freeze > constraints.txt && rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(DEMO_DIR) local_outputs build
