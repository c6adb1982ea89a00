#!/usr/bin/env bash
# Build (once) and install Horovod 0.28.1 with Gloo + TensorFlow into the given venv.
# The sdist does not compile against TF >= 2.20 (GPU-only XLA code is built unconditionally);
# xla-gpu-only.patch guards it with HAVE_GPU. The wheel only fits the exact TF it was built
# against, so the cache key holds the TF, Python and patch versions.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:?usage: build.sh VENV_DIR}
py="$venv/bin/python"
version=0.28.1
sdist_sha256=92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0
cache=${GALLERYTAG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gallerytag}

if "$py" -c "import horovod.tensorflow as h; assert h.gloo_built()" 2>/dev/null; then
  echo "horovod: already installed with Gloo"; exit 0
fi

tf_version=$("$py" -c "import tensorflow as tf; print(tf.__version__)")
py_tag=$("$py" -c "import sys; print(f'cp{sys.version_info.major}{sys.version_info.minor}')")
patch_sum=$(cat "$here"/*.patch | sha256sum | cut -c1-12)
wheel_dir="$cache/wheels/horovod-$version-tf$tf_version-$py_tag-$patch_sum"

if ! ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1; then
  missing=()
  for tool in cmake g++ make patch; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  # Debian's Python (the local container base, k8s/images/build-local.sh) ships no headers.
  include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  [ -f "$include/Python.h" ] || missing+=(python3-dev)
  if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "horovod: installing build tools: ${missing[*]}"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}"
    else
      echo "horovod: missing build tools: ${missing[*]}." >&2
      echo "  Install them, e.g. 'sudo apt-get install ${missing[*]}', then rerun 'make setup'." >&2
      exit 1
    fi
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "horovod: building $version for TF $tf_version ($py_tag); takes 2-4 minutes on 2 cores"
  "$py" -m pip download -q --no-deps --no-binary :all: "horovod==$version" -d "$work"
  echo "$sdist_sha256  $work/horovod-$version.tar.gz" | sha256sum -c --quiet
  tar -xzf "$work/horovod-$version.tar.gz" -C "$work"
  for p in "$here"/*.patch; do patch -s -d "$work/horovod-$version" -p1 < "$p"; done
  mkdir -p "$wheel_dir"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS=-j"$(nproc)" \
    "$py" -m pip wheel -q --no-build-isolation --no-deps "$work/horovod-$version" -w "$wheel_dir"
fi
"$py" -m pip install -q --no-deps "$wheel_dir"/horovod-*.whl
# Horovod's runtime deps (cloudpickle, psutil, pyyaml, packaging, cffi) are pinned in constraints.txt.
"$py" -c "import horovod.tensorflow as h; assert h.gloo_built(), 'horovod built without Gloo'"
echo "horovod: installed from $wheel_dir"
