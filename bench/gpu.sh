#!/usr/bin/env bash
# The prepared GPU check: on a machine with an NVIDIA GPU, in one go (goal: under 8 minutes),
#   1. a 1-GPU Horovod training (horovodrun -np 1, the project's train step on real TFRecord
#      shards and on in-memory tensors): images/s;
#   2. the tagging benchmark (bench/tag.py) on a small generated gallery: model-only images/s
#      of Keras (on the GPU) and OpenVINO / ONNX Runtime (on the CPU), the pipeline with the
#      default runtime (`auto` picks Keras where a GPU is visible), ratios and memory;
# and prints every figure, with nvidia-smi's view of the GPU.
#
# Usage: bench/gpu.sh [--cpu] [--venv DIR] [--workdir DIR]
#   --venv DIR  use this environment; without it, .gpu-venv is made from pip wheels only
#               (requirements.txt with tensorflow[and-cuda] instead of tensorflow-cpu;
#               Horovod from its sdist via third_party/horovod/build.sh). Where the machine
#               cannot reach a package index, point PIP_FIND_LINKS at a wheelhouse and set
#               PIP_NO_INDEX=1.
#   --cpu       dry run on a machine without a GPU (CUDA hidden, tiny sizes, the project's
#               .venv by default, never installs): proves the script runs end to end; its
#               figures are not GPU figures.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode=gpu venv="" workdir=""
while (($#)); do
  case $1 in
    --cpu) mode=cpu ;;
    --venv) venv=$2; shift ;;
    --workdir) workdir=$2; shift ;;
    *) echo "gpu.sh: unknown argument $1 (see the usage at the top of $0)" >&2; exit 2 ;;
  esac
  shift
done
started=$(date +%s)

if [ "$mode" = gpu ]; then
  if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu.sh: no NVIDIA GPU answers nvidia-smi here; use --cpu for a dry run" >&2
    exit 1
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  venv=${venv:-$root/.gpu-venv}
  # Each Beam worker process loads TF: without growth the first one takes all GPU memory.
  export TF_FORCE_GPU_ALLOW_GROWTH=true
  images=2000 small=500 train_images=1024 steps=30 model_images=1024 rounds=3
else
  venv=${venv:-$root/.venv}
  export CUDA_VISIBLE_DEVICES=""
  images=64 small=32 train_images=64 steps=3 model_images=64 rounds=1
fi
workdir=${workdir:-$root/.cache/bench-gpu-$mode}
py="$venv/bin/python"

if ! "$py" -c "import tensorflow, openvino, horovod.tensorflow" 2>/dev/null; then
  if [ "$mode" = cpu ]; then
    echo "gpu.sh --cpu: $venv lacks tensorflow, openvino or horovod: run 'make setup' or" \
      "pass --venv DIR" >&2
    exit 1
  fi
  echo "gpu.sh: setting up $venv from pip wheels"
  python3 -m venv "$venv"
  "$py" -m pip install -q --upgrade "pip==25.3"
  reqs=$(mktemp) cons=$(mktemp)
  trap 'rm -f "$reqs" "$cons"' EXIT
  # The GPU build of the same TensorFlow; its CUDA libraries come as wheels too.
  sed 's/^tensorflow-cpu==/tensorflow[and-cuda]==/' requirements.txt > "$reqs"
  grep -v '^tensorflow-cpu==' constraints.txt > "$cons"
  "$py" -m pip install -q -r "$reqs" -c "$cons"
  bash third_party/horovod/build.sh "$venv"
fi
"$py" -c "import tensorflow as tf; print('TensorFlow', tf.__version__, 'GPUs:', \
  [d.name for d in tf.config.list_physical_devices('GPU')])" 2>/dev/null

echo "== 1-GPU Horovod training ($train_images images, $steps steps) =="
"$venv/bin/horovodrun" -np 1 -H localhost:1 --gloo "$py" bench/train_input.py \
  --images "$train_images" --steps "$steps" --no-allreduce --workdir "$workdir/train" \
  2>&1 | grep -v -e "oneDNN" -e "absl::" || { echo "gpu.sh: training failed" >&2; exit 1; }

echo "== tagging: model alone per runtime, pipeline, ratios ($images images) =="
"$py" bench/tag.py --images "$images" --small "$small" --hand-images 50 --process-images 2 \
  --decode-images 100 --model-images "$model_images" --rounds "$rounds" --workdir "$workdir/tag" 2>&1 | grep -v -e "oneDNN" -e "absl::"

[ "$mode" = gpu ] && nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv
echo "gpu.sh ($mode): finished in $(( $(date +%s) - started )) s"
