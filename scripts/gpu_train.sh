#!/usr/bin/env bash
# Train the natural-image priors on a GPU machine (see docs/natural_priors.md and ../shared/GPU.md): minutes there
# are hours on the project's CPUs. Prepare here (`make gpu-train-stage`: the training images into .gpu-data/, the
# pure-Python wheels the GPU machine lacks into .gpu-wheels/), then on the device, from the repository root:
#   bash scripts/gpu_train.sh            (carry: .gpu-data .gpu-wheels; results and weights in $OUT)
# Each prior trains for at most GPU_TRAIN_MINUTES (default 4) in bf16 through imaging.learning.Trainer, continuing
# from the shipped weights (--init) when no run checkpoint is carried; the run folders (checkpoints, logs) and the
# exported weights land in $OUT, to be copied into runs/ and data/ here.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${OUT:-gpu-results}"
mkdir -p "$RESULTS"
PY="${PYTHON:-python3}"
HOURS=$("$PY" -c "print(${GPU_TRAIN_MINUTES:-4} / 60)")
export IMAGING_NO_EXT=1  # training needs no compiled op: skip the CUDA build
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .gpu-wheels/*.whl >/dev/null 2>&1; then
  DEPS="$(mktemp -d)"
  for wheel in .gpu-wheels/*.whl; do "$PY" -m zipfile -e "$wheel" "$DEPS"; done
  export PYTHONPATH="$DEPS:$PYTHONPATH"
fi
DATA="${GPU_TRAIN_DATA:-.gpu-data/train400}"
{ nvidia-smi; "$PY" -c "import torch, diffusers, accelerate; print(torch.__version__, diffusers.__version__, accelerate.__version__)"; } \
  > "$RESULTS/device.log" 2>&1
status=0
for prior in ${GPU_TRAIN_PRIORS:-ddpm lpn}; do
  case "$prior" in ddpm) shipped=imaging/weights/ddpm_natural ;; lpn) shipped=imaging/weights/lpn_natural.safetensors ;; esac
  run="$RESULTS/runs/$prior"
  [ -d "runs/$prior" ] && mkdir -p "$RESULTS/runs" && cp -r "runs/$prior" "$run"   # a carried run continues exactly
  "$PY" scripts/train_priors.py "$prior" --data "$DATA" --run "$run" --hours "$HOURS" --init "$shipped" \
    > "$RESULTS/train_$prior.log" 2>&1 || status=1
  "$PY" scripts/train_priors.py "$prior" --run "$run" --export "$RESULTS/$(basename "$shipped")" \
    >> "$RESULTS/train_$prior.log" 2>&1 || status=1
  rm -f "$run"/*.safetensors.tmp
done
exit $status
