#!/usr/bin/env bash
# The GPU check of the cupy backend (kernels/*.cu): one command, run from a copy of this repository on a
# machine with a CUDA GPU and CuPy (cupy-cuda12x or cupy-cuda13x). It prints one PASS/FAIL line per
# check (each kernel against the NumPy reference at worst-case values; 10 training steps bit-identical
# to the NumPy and Numba backends, checkpoint content hash and bytes included) and a bench at width
# 256 x 6 layers for populations 2^12 .. 2^18; exit status 0 when every check passed. Budgeted to
# finish in under 5 minutes on one H200 (the bench skips populations once its time budget is spent).
#
# A GPU machine without a package registry (the H200 machines lent to this project hold CuPy 14 for
# CUDA 13, numba, numpy, click, pyyaml, pytest and hypothesis, but not zarr) needs a wheel folder
# .whl (git-ignored) built where PyPI is reachable, for its Python (3.12 there):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
#
# (about 9 MB; the repository and .whl together are far under the 64 MiB a device run carries). Then,
# on the GPU machine, from the repository root:
#
#   bash scripts/gpu_check.sh            # add --no-bench for the checks alone
#
# The wheels are installed into /tmp/intlm-site only when zarr is missing; intlm runs from this
# checkout (no install needed).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import zarr" 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "error: zarr is not installed and there is no .whl folder: see the header of $0" >&2
        exit 2
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/intlm-site .whl/*.whl
    export PYTHONPATH="/tmp/intlm-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec timeout 295 python3 -m intlm.gpu_check "$@"
