#!/usr/bin/env bash
# GPU check (see README "Checking the CUDA path"): build imaging with CUDA against the machine's own torch, run the
# CUDA tests and the benchmarks on the GPU, and keep everything printed in one results folder ($OUT or gpu-results/).
# Usage on a GPU machine, from the repository root:  bash scripts/gpu_check.sh   (or: make gpu-check)
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${OUT:-gpu-results}"
mkdir -p "$RESULTS"
PY="${PYTHON:-python3}"
status=0
run() {  # run NAME COMMAND...: tee output into $RESULTS/NAME.log, remember failures, keep going
  local name="$1"; shift
  echo "=== $name: $*" | tee "$RESULTS/$name.log"
  local start=$SECONDS
  "$@" 2>&1 | tee -a "$RESULTS/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$RESULTS/$name.log"
  [ "$rc" -eq 0 ] || status=1
}

# The benchmarks run as scripts from an in-place build: the repository root must be importable.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The GPU machine lacks some pure-Python dependencies (tqdm): wheels carried in .gpu-wheels/ are unpacked onto
# PYTHONPATH (no network, no pip needed).
if ls .gpu-wheels/*.whl >/dev/null 2>&1; then
  DEPS="$(mktemp -d)"
  for wheel in .gpu-wheels/*.whl; do "$PY" -m zipfile -e "$wheel" "$DEPS"; done
  export PYTHONPATH="$DEPS${PYTHONPATH:+:$PYTHONPATH}"
fi

{ nvidia-smi; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"; } \
  > "$RESULTS/device.log" 2>&1
rm -f imaging/_C*.so
run build env TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" FORCE_CUDA=1 \
  "$PY" setup.py build_ext --inplace
# CUDA tests: every test named *cuda* (CPU parity, opcheck and gradcheck on the GPU, solver trajectories), except
# the nvcc compile checks, which the CPU machines already run.
run tests-cuda "$PY" -m pytest -q -rs -k "cuda and not compiles" tests -p no:cacheprovider
if [ -n "${IMAGING_GPU_FULL:-}" ]; then
  run tests-all "$PY" -m pytest -q tests -p no:cacheprovider --ignore=tests/test_examples.py
fi
for bench in ${IMAGING_GPU_BENCHMARKS:-benchmarks/*.py}; do
  run "bench-$(basename "$bench" .py)" timeout "${IMAGING_GPU_BENCH_TIMEOUT:-150}" "$PY" "$bench" --device cuda
done
echo "GPU check finished with status $status; logs in $RESULTS/"
exit $status
