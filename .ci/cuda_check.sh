#!/usr/bin/env bash
# `make cuda-check`: proves that the CUDA half of setup.py builds, links and imports.
#
# There is no GPU here, so the check builds deepfast._C with its CUDA kernels against the CUDA
# build of torch, in a venv of its own outside the repo, from a copy of the sources outside the
# repo (its object files never meet those of the CPU build in the checkout), installs it as a
# regular (non-editable) package and then checks what got installed (.ci/check_cuda_build.py).
# A CUDA call itself would fail for lack of a driver: that is not checked.
#
# Environment:
#   DEEPFAST_CUDA_VENV      the venv (default ~/.cache/deepfast/cuda-venv; created once, ~80 s, 5.5 GB)
#   DEEPFAST_CUDA_BUILD     the build dir (default ~/.cache/deepfast/cuda-build)
#   DEEPFAST_CUDA_PACKAGES  what goes into the venv (default: torch==2.14.1, the runtime dependencies, build tools)
#   DEEPFAST_CUDA_LIBS_FROM another venv whose packages this one borrows (a .pth file): PACKAGES are then
#                           installed without their dependencies (the CUDA libraries of an older torch
#                           would otherwise be several GB of downloads; `make oldest-torch-check`)
#   CUDA_HOME               the CUDA toolkit with nvcc (default /usr/local/cuda-13.0)
#   TORCH_CUDA_ARCH_LIST    default "8.0;9.0"
#   MAX_JOBS                parallel compile jobs (default 2)
#   PYTHON                  interpreter that creates the venv (default python3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="${HOME}/.cache/deepfast"
VENV="${DEEPFAST_CUDA_VENV:-${CACHE}/cuda-venv}"
BUILD="${DEEPFAST_CUDA_BUILD:-${CACHE}/cuda-build}"
PACKAGES="${DEEPFAST_CUDA_PACKAGES:-torch==2.14.1 numpy tqdm scikit-learn scikit-image pillow pybind11 ninja setuptools wheel}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda-13.0}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}"
export MAX_JOBS="${MAX_JOBS:-2}"
export DEEPFAST_CUDA=1
unset DEEPFAST_NO_EXT PYTHONPATH PIP_REQUIRE_VIRTUALENV

SRC="${BUILD}/src"
LOG="${BUILD}/build.log"
START=${SECONDS}
say() { printf 'cuda-check [%3ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf 'cuda-check: FAILED: %s\n' "$*" >&2; exit 1; }

[[ -x "${CUDA_HOME}/bin/nvcc" ]] || die "nvcc not found at ${CUDA_HOME}/bin/nvcc (set CUDA_HOME)"
mkdir -p "${BUILD}"
# One cuda-check at a time per build dir (two would fight over the venv and the objects).
exec 9>"${BUILD}.lock"
flock 9

# --- 1. the venv with the CUDA build of torch, created once ---------------------------------
STAMP="${VENV}/.deepfast-cuda-venv"
if [[ ! -f "${STAMP}" || "$(cat "${STAMP}")" != "${PACKAGES}" ]]; then
    if [[ -e "${VENV}" ]] && ! "${VENV}/bin/python" -c '' 2>/dev/null; then
        [[ -f "${VENV}/pyvenv.cfg" ]] || die "${VENV} exists and is not a venv; remove it or set DEEPFAST_CUDA_VENV"
        say "removing the broken venv ${VENV}"
        rm -rf "${VENV}"
    fi
    if [[ ! -e "${VENV}" ]]; then
        say "creating ${VENV} (once; about 80 s)"
        "${PYTHON:-python3}" -m venv "${VENV}"
    fi
    say "installing ${PACKAGES} into ${VENV}"
    if [[ -n "${DEEPFAST_CUDA_LIBS_FROM:-}" ]]; then
        [[ -x "${DEEPFAST_CUDA_LIBS_FROM}/bin/python" ]] ||
            die "DEEPFAST_CUDA_LIBS_FROM=${DEEPFAST_CUDA_LIBS_FROM} is not a venv (make cuda-check creates it)"
        # shellcheck disable=SC2086
        "${VENV}/bin/python" -m pip install -q --no-deps ${PACKAGES}
        purelib='import sysconfig; print(sysconfig.get_paths()["purelib"])'
        "${DEEPFAST_CUDA_LIBS_FROM}/bin/python" -c "${purelib}" >"$("${VENV}/bin/python" -c "${purelib}")/deepfast-borrowed.pth"
    else
        # shellcheck disable=SC2086  # PACKAGES is a list of words
        "${VENV}/bin/python" -m pip install -q ${PACKAGES}
    fi
    printf '%s' "${PACKAGES}" >"${STAMP}"
fi
PY="${VENV}/bin/python"
"${PY}" -c 'import sys, torch; sys.exit(torch.version.cuda is None)' \
    || die "the torch in ${VENV} is not a CUDA build (remove ${STAMP} to reinstall)"

# --- 2. a copy of the sources outside the repo ----------------------------------------------
# The files git knows (tracked, plus new ones that are not ignored), minus anything built.
# Synced by content: a file whose content changed since the last run gets a new mtime, an
# unchanged one keeps its old one, so ninja recompiles exactly what changed, even when the
# build dir was last used by another checkout (mtimes of two checkouts do not compare).
say "copying the sources to ${SRC}"
PATHS=(setup.py pyproject.toml README.md csrc deepfast kernels)
list_sources() {
    if git -C "${ROOT}" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "${ROOT}" ls-files -z --cached --others --exclude-standard -- "${PATHS[@]}"
    else
        find "${PATHS[@]}" -type f -print0
    fi | while IFS= read -r -d '' f; do
        case "${f}" in *.so | *.pyd | *.o | */__pycache__/* | *.pyc) continue ;; esac
        if [[ -f "${ROOT}/${f}" ]]; then printf '%s\0' "${f}"; fi  # skips tracked files deleted in the checkout
    done
}
STAGE="${BUILD}/stage"
rm -rf "${STAGE}" && mkdir -p "${STAGE}" "${SRC}"
(cd "${ROOT}" && list_sources | tar --null -T - -cf -) | tar -xf - -C "${STAGE}"
CHANGED=0
while IFS= read -r -d '' f; do  # new or changed files: copied with a fresh mtime
    if ! cmp -s "${STAGE}/${f}" "${SRC}/${f}"; then
        mkdir -p "$(dirname "${SRC}/${f}")" && cp -f "${STAGE}/${f}" "${SRC}/${f}" && touch "${SRC}/${f}"
        CHANGED=$((CHANGED + 1))
    fi
done < <(cd "${STAGE}" && find . -type f -print0)
while IFS= read -r -d '' f; do  # files that are no longer sources; build/ and *.egg-info stay
    [[ -e "${STAGE}/${f}" ]] || rm -f "${SRC}/${f}"
done < <(cd "${SRC}" && find "${PATHS[@]}" -type f -print0 2>/dev/null || true)
rm -rf "${STAGE}"
say "${CHANGED} source file(s) new or changed since the last cuda-check"
[[ -f "${SRC}/setup.py" ]] || die "no setup.py was copied from ${ROOT}"
NCU=$(find "${SRC}/csrc" -name '*.cu' | wc -l)
[[ "${NCU}" -gt 0 ]] || die "no csrc/**/*.cu in the sources: nothing CUDA to build"

# --- 3. build and install (regular install, CUDA kernels forced on) --------------------------
say "building deepfast._C with ${NCU} .cu file(s) for TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}, MAX_JOBS=${MAX_JOBS} (log: ${LOG})"
if ! (cd "${SRC}" && "${PY}" -m pip install -v --no-build-isolation --no-deps .) >"${LOG}" 2>&1; then
    if grep -q 'FAILED: ' "${LOG}"; then  # ninja: the failed step and what the compiler said
        echo "----- failed compile steps (from ${LOG}) -----" >&2
        sed -n '/FAILED: /,/^ *Traceback\|^ *subprocess.CalledProcessError/p' "${LOG}" | head -n 80 >&2
    else
        echo "----- last lines of ${LOG} -----" >&2
        tail -n 60 "${LOG}" >&2
    fi
    die "the CUDA build of deepfast._C failed"
fi
COMPILED=$(grep -c -E '^[[:space:]]*\[[0-9]+/[0-9]+\]' "${LOG}" || true)
say "built and installed (${COMPILED} ninja step(s); 0 means every object was up to date)"

# --- 4. check what was installed, from a neutral directory ----------------------------------
say "checking the installed package"
WORK=$(mktemp -d)
trap 'rm -rf "${WORK}"' EXIT
(cd "${WORK}" && DEEPFAST_REPO="${ROOT}" "${PY}" "${ROOT}/.ci/check_cuda_build.py")
say "OK"
