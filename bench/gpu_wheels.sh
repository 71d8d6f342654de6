#!/usr/bin/env bash
# The wheels a bare GPU machine (Python 3.12, torch with CUDA, no network) lacks for
# bench/gpu_check.py, downloaded here into .gpu-wheels/ (git-ignored, about 36 MB: under the
# 64 MiB a device call carries). On the GPU machine:
#   pip install --no-deps --no-index .gpu-wheels/*.whl && PYTHONPATH=. python bench/gpu_check.py OUTDIR
set -euo pipefail
cd "$(dirname "$0")/.."
pip download --only-binary :all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --no-deps -d .gpu-wheels \
    pillow imagecodecs pytest pluggy iniconfig pygments packaging tqdm grpcio-health-checking grpcio-reflection
du -sh .gpu-wheels
