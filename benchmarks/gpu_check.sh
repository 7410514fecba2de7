#!/usr/bin/env bash
# GPU runbook: on a machine with an NVIDIA GPU, torch, triton, nvcc, ninja, pytest and pytest-benchmark
# (no package registry needed), build deepfast._C with CUDA in place, run every test (CUDA tests
# included), compute-sanitizer (memcheck, racecheck) over every CUDA/Triton kernel, and the benchmarks.
# Results go to benchmarks/results/<gpu>/ (and to $OUT when set): commit them.
#
#   bash benchmarks/gpu_check.sh [build] [test] [sanitize] [bench]     (default: all four)
#   bash benchmarks/gpu_check.sh build attacks   # only the CUDA-graph attack tests and the ResNet-18 PGD rows
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STEPS=${*:-build test sanitize bench}
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
SLUG=$(echo "$GPU" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
RESULTS=benchmarks/results/$SLUG
mkdir -p "$RESULTS"
status=0
step() {  # step NAME COMMAND...: run, log to $RESULTS/NAME.log, remember a failure
    echo "== $1"
    "${@:2}" 2>&1 | tee "$RESULTS/$1.log"
    local rc=${PIPESTATUS[0]}
    echo "== $1: exit $rc" | tee -a "$RESULTS/summary.txt"
    [ "$rc" -eq 0 ] || status=1
}
{ date -u; echo "GPU: $GPU"; nvidia-smi --query-gpu=driver_version,memory.total --format=csv,noheader
  $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  nvcc --version | tail -1; } > "$RESULTS/machine.txt" 2>&1
cat "$RESULTS/machine.txt"
for s in $STEPS; do
    case $s in
    build) # editable install; where pip cannot (old setuptools without wheel), build in place and
           # link deepfast/kernels to the top-level kernels/ (what package_dir does in an install)
           export DEEPFAST_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
           $PY -m pip install --no-build-isolation --no-deps --no-index -e . > "$RESULTS/build.log" 2>&1 ||
               step build sh -c "$PY setup.py build_ext --inplace && ln -sfn ../kernels deepfast/kernels"
           step info $PY -m deepfast info ;;
    test) step test $PY -m pytest -q -p no:cacheprovider -ra ;;
    sanitize) for tool in memcheck racecheck; do
                  step "sanitize-$tool" compute-sanitizer --tool "$tool" --error-exitcode 1 \
                      $PY tests/gpu/sanitize_kernels.py
              done ;;
    bench) step bench $PY benchmarks/run.py --out "$RESULTS" ;;
    attacks) step attacks-test $PY -m pytest -q -p no:cacheprovider -ra tests/test_attacks_graphed.py
             step attacks-bench $PY benchmarks/run.py -k resnet18 --out "$RESULTS/attacks-resnet18" ;;
    *) echo "unknown step $s"; exit 2 ;;
    esac
done
if [ -n "${OUT:-}" ]; then tar czf "$OUT/gpu-results.tgz" -C benchmarks/results "$SLUG"; fi
exit $status
