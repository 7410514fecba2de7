#!/usr/bin/env bash
# GPU runbook: on a machine with an NVIDIA GPU, torch, triton, nvcc, ninja, pytest and pytest-benchmark
# (no package registry needed). GPU time comes in short windows, so the default is one essential pass
# of at most ~8 minutes; every step runs under a time limit of its own, and a step that fails or runs
# out of time does not stop the others.
#
#   bash benchmarks/gpu_check.sh                 the essential pass:
#       build     editable CUDA build in place, timed (the visible GPU's architecture only)
#       tests     the cuda tests and the Triton tests compiled for real, in parallel processes
#       sanitize  compute-sanitizer memcheck and racecheck over every kernel (beside the tests)
#       bench     the headline rows: each op at its largest shape against eager and torch.compile in
#                 the same run, with % of copy bandwidth, and the CUDA-graph PGD row of the attacks
#   bash benchmarks/gpu_check.sh rest            the optional second call: the whole test suite, every benchmark
#   bash benchmarks/gpu_check.sh STEP...         chosen steps: build tests sanitize bench rest
#   bash benchmarks/gpu_check.sh --dry-run [STEP...]  print every step and check what it needs (no GPU; in CI)
#
# Results go to benchmarks/results/<gpu>/ (and $OUT/gpu-results.tgz when OUT is set): summary.md
# gathers the machine, each step's status, time and limit, and the tail of each step's log; the logs
# and the benchmark tables lie beside it. Commit that folder.
#
# Limits (seconds; the essential pass is at most their sum, 480 s, plus about 20 s of set-up):
#   LIMIT_BUILD=100 LIMIT_TESTS=140 (tests and sanitizers side by side) LIMIT_BENCH_OP=40 (each of four)
#   LIMIT_BENCH_ATTACK=60 LIMIT_REST=540 (each of the two steps of rest)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
STEPS=${*:-build tests sanitize bench}
LIMIT_BUILD=${LIMIT_BUILD:-100}
LIMIT_TESTS=${LIMIT_TESTS:-140}
LIMIT_BENCH_OP=${LIMIT_BENCH_OP:-40}
LIMIT_BENCH_ATTACK=${LIMIT_BENCH_ATTACK:-60}
LIMIT_REST=${LIMIT_REST:-540}

# The test groups run side by side (Triton compiles each specialization once, single-threaded; the
# GPU is shared): op tests on the cuda and triton backends (-k cuda), then every cuda-marked test.
OP_TESTS="-k cuda"
TEST_GROUPS=(
    "tests/test_norm_leaky_relu.py tests/test_nn_norm_leaky_relu.py"
    "tests/test_pgd_step.py tests/test_attacks_graphed.py"
    "tests/test_cycle_l1.py tests/test_reparameterize_kl.py tests/test_nn_reparameterize.py tests/test_losses_cycle.py"
    "tests/test_nonfinite.py"
)
# The headline benchmark rows, one pytest -k expression each (ids of benchmarks/bench_*.py).
BENCH_OPS=(
    "reparameterize_kl:test_reparameterize_kl and 65536x512 and forward+backward"
    "batch_norm_leaky_relu:test_batch_norm_leaky_relu and 256x64x56x56 and forward+backward"
    "cycle_l1:test_cycle_l1 and 16x3x512x512 and forward+backward"
    "pgd_step:test_pgd_step and 16x3x512x512"
    "attack_pgd:test_attack_pgd_resnet18 and (graph or (plain and not compiled))"
)

if [ "$DRY" = 1 ]; then
    GPU="dry-run"
else
    GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
fi
SLUG=$(echo "$GPU" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
RESULTS=${RESULTS:-benchmarks/results/$SLUG}
[ "$DRY" = 1 ] && RESULTS=$(mktemp -d)
mkdir -p "$RESULTS"
SUMMARY=$RESULTS/summary.md
STEPS_TABLE=$RESULTS/steps.part  # one row per step run, appended by run (also from background jobs)
: >"$STEPS_TABLE"
status=0

# run NAME LIMIT COMMAND...: the command under `timeout`, its output in $RESULTS/NAME.log; records the
# status (ok, FAILED (exit N), TIMEOUT after LIMIT s) and the seconds it took in $STEPS_TABLE; returns 1
# unless ok. With --dry-run: prints it.
run() {
    local name=$1 limit=$2
    shift 2
    if [ "$DRY" = 1 ]; then
        printf '  [%s, %ss] %s\n' "$name" "$limit" "$*"
        return 0
    fi
    local start=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@" >"$RESULTS/$name.log" 2>&1
    rc=$?
    local took=$((SECONDS - start)) what=ok
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        what="TIMEOUT after ${limit} s"
    elif [ "$rc" -ne 0 ]; then
        what="FAILED (exit $rc)"
    fi
    echo "$name: $what (${took} s)"
    echo "| $name | $what | $took | $limit |" >>"$STEPS_TABLE"
    [ "$what" = ok ]
}

# spawn COMMAND...: in the background (printed in order with --dry-run)
spawn() {
    if [ "$DRY" = 1 ]; then "$@"; else "$@" & fi
}

# check WHAT COMMAND...: a dry-run check (runs the command, fails the dry run when it fails).
check() {
    local what=$1
    shift
    if "$@" >/tmp/gpu_check_dry.$$ 2>&1; then
        echo "  ok    $what"
    else
        echo "  FAIL  $what"
        sed 's/^/        /' /tmp/gpu_check_dry.$$ | tail -20
        status=1
    fi
    rm -f /tmp/gpu_check_dry.$$
}

build() {
    # editable install; where pip cannot (old setuptools without wheel), build in place and link
    # deepfast/kernels to the top-level kernels/ (what package_dir does in an install)
    run build "$LIMIT_BUILD" env DEEPFAST_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" sh -c \
        "$PY -m pip install --no-build-isolation --no-deps --no-index -e . ||
         ($PY setup.py build_ext --inplace && ln -sfn ../kernels deepfast/kernels)"
    run info 60 "$PY" -m deepfast info
}

tests() {  # the test groups and the two sanitizers, side by side
    local i=0 ignore=""
    for group in "${TEST_GROUPS[@]}"; do
        # shellcheck disable=SC2086  # a group is a list of files
        spawn run "tests-$i" "$LIMIT_TESTS" "$PY" -m pytest -q -p no:cacheprovider -ra $OP_TESTS $group
        for f in $group; do ignore="$ignore --ignore=$f"; done
        i=$((i + 1))
    done
    # shellcheck disable=SC2086
    spawn run "tests-$i" "$LIMIT_TESTS" "$PY" -m pytest -q -p no:cacheprovider -ra -m cuda tests $ignore
    if [[ " $STEPS " == *" sanitize "* ]]; then sanitize; fi
    wait
}

sanitize() {
    for tool in memcheck racecheck; do
        spawn run "sanitize-$tool" "$LIMIT_TESTS" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
            compute-sanitizer --tool "$tool" --error-exitcode 1 "$PY" tests/gpu/sanitize_kernels.py
    done
    wait
}

bench() {
    for entry in "${BENCH_OPS[@]}"; do
        local name=${entry%%:*} expr=${entry#*:} limit=$LIMIT_BENCH_OP
        [ "$name" = attack_pgd ] && limit=$LIMIT_BENCH_ATTACK
        run "bench-$name" "$limit" "$PY" benchmarks/run.py -k "$expr" --max-time 0.5 --out "$RESULTS/bench-$name"
    done
}

rest() {
    run rest-tests "$LIMIT_REST" "$PY" -m pytest -q -p no:cacheprovider -ra
    run rest-bench "$LIMIT_REST" "$PY" benchmarks/run.py --out "$RESULTS/bench-all"
}

dry_checks() {  # what the steps need, checked without a GPU
    echo "checks:"
    for step in $STEPS; do
        case $step in build | tests | sanitize | bench | rest) ;; *) echo "  FAIL  unknown step $step"; status=1 ;; esac
    done
    check "setup.py and tests/gpu/sanitize_kernels.py exist" test -f setup.py -a -f tests/gpu/sanitize_kernels.py
    check "sanitize_kernels.py compiles" "$PY" -m py_compile tests/gpu/sanitize_kernels.py
    local files=""
    for group in "${TEST_GROUPS[@]}"; do files="$files $group"; done
    # shellcheck disable=SC2086
    check "the test groups collect" "$PY" -m pytest -q -p no:cacheprovider --collect-only $files
    check "the cuda-marked tests collect" "$PY" -m pytest -q -p no:cacheprovider --collect-only -m cuda tests
    for entry in "${BENCH_OPS[@]}"; do
        check "benchmark rows of ${entry%%:*} exist" sh -c "$PY -m pytest -q -p no:cacheprovider benchmarks \
            -o python_files='bench_*.py' --collect-only -k '${entry#*:}' | grep -q '::'"
    done
}

machine() {
    {
        date -u
        echo "GPU: $GPU"
        nvidia-smi --query-gpu=driver_version,memory.total,compute_cap --format=csv,noheader
        "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
        "$PY" -c "from deepfast import hardware; print('CPU:', hardware.describe())" 2>/dev/null || lscpu | grep 'Model name'
        nvcc --version | tail -1
    } 2>&1
}

write_summary() {
    {
        echo "# GPU runbook: $GPU"
        echo
        echo "Steps: $STEPS. Command: \`bash benchmarks/gpu_check.sh $*\`"
        echo
        echo '```'
        cat "$RESULTS/machine.txt"
        echo '```'
        echo
        echo "| step | status | seconds | limit |"
        echo "| --- | --- | ---: | ---: |"
        cat "$STEPS_TABLE"
        for log in "$RESULTS"/*.log; do
            echo
            echo "## $(basename "$log" .log)"
            echo
            echo '```'
            tail -n 40 "$log"
            echo '```'
        done
        for table in "$RESULTS"/bench-*/table.md; do
            [ -f "$table" ] || continue
            echo
            echo "## $(basename "$(dirname "$table")")"
            echo
            cat "$table"
        done
    } >"$SUMMARY"
}

if [ "$DRY" = 1 ]; then
    echo "gpu_check.sh --dry-run: steps $STEPS, results would go to benchmarks/results/<gpu>/"
    for step in $STEPS; do
        [ "$step" = sanitize ] && [[ " $STEPS " == *" tests "* ]] && continue  # runs beside the tests
        case $step in build | tests | sanitize | bench | rest) echo "$step:" && "$step" ;; esac
    done
    dry_checks
    rm -rf "$RESULTS"
    echo "dry run: $([ $status = 0 ] && echo OK || echo FAILED)"
    exit $status
fi

for step in $STEPS; do
    case $step in build | tests | sanitize | bench | rest) ;; *) echo "unknown step $step" >&2; exit 2 ;; esac
done
machine >"$RESULTS/machine.txt"
cat "$RESULTS/machine.txt"
for step in $STEPS; do
    [ "$step" = sanitize ] && [[ " $STEPS " == *" tests "* ]] && continue  # runs beside the tests
    "$step"
done
write_summary "$@"
if grep -qE '\| (FAILED|TIMEOUT)' "$STEPS_TABLE"; then status=1; fi
rm -f "$STEPS_TABLE"
echo "summary: $SUMMARY"
if [ -n "${OUT:-}" ]; then tar czf "$OUT/gpu-results.tgz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"; fi
exit $status
