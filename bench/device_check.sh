#!/usr/bin/env bash
# The GPU checks, in one call on a lent device machine (its image has PyTorch with CUDA, transformers and
# pytest, but no Ray, no diffusers and no network):
#
#   here:   make device-wheels                 # the missing packages as wheels, into .whl/ (git-ignored)
#   there:  bash bench/device_check.sh         # device `run` with carry [".whl"] and timeout_s 600
#
# It installs the wheels beside the image's PyTorch, runs the gpu-marked tests with only the model
# fixtures (tests/conftest.py would import Ray), then `bench.gpu_svd` at full SVD-XT size. Logs and JSON
# go to $OUT (the device tool brings them back). Record the numbers in bench/RESULTS.md.
#
# Environment: WHEELS (default .whl), FAMILIES (default "svd"; "ltx wan" runs bench.gpu_video for the
# text-conditioned families instead), GPU_SVD_ARGS (e.g. --no-compile, or --tiny without a GPU),
# GPU_SVD_TIMEOUT_S (default 480: the eight minutes), GPU_VIDEO_ARGS (default "--steps 8": full
# resolution and length, fewer steps, so both families fit one 10-minute call; time per step and peak
# memory are what steps do not change), GPU_VIDEO_TIMEOUT_S (default 270 per family). FAMILIES="step" runs
# `bench.step_scheduling` at SVD-XT size instead, step loop against call batching under Poisson arrivals,
# with STEP_ARGS (default "--model xt --scenes 12 --steps 4 --rounds 1 --rates near", to fit one call) and
# STEP_TIMEOUT_S (default 480).
set -uo pipefail

out=${OUT:-bench/out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "${WHEELS:-.whl}"/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

{
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    fi
    python3 -c "import sys, torch, diffusers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$out/machine.txt"

status=0
for family in ${FAMILIES:-svd}; do
    if [ "$family" = svd ]; then
        python3 -m pytest --noconftest -p tests.fixtures.models -m gpu -q \
            tests/unit/test_svd_engine.py tests/unit/test_painter.py 2>&1 |
            tee "$out/pytest_gpu.log" || status=1
        # shellcheck disable=SC2086 # GPU_SVD_ARGS holds several flags on purpose
        timeout "${GPU_SVD_TIMEOUT_S:-480}" python3 -m bench.gpu_svd ${GPU_SVD_ARGS:-} --out "$out/gpu_svd.json" 2>&1 |
            tee "$out/gpu_svd.log" || status=1
    elif [ "$family" = step ]; then
        # shellcheck disable=SC2086 # STEP_ARGS holds several flags on purpose
        timeout "${STEP_TIMEOUT_S:-480}" python3 -m bench.step_scheduling \
            ${STEP_ARGS:---model xt --scenes 12 --steps 4 --rounds 1 --rates near} \
            --out "$out/step_scheduling.json" 2>&1 | tee "$out/step_scheduling.log" || status=1
    else
        # shellcheck disable=SC2086 # GPU_VIDEO_ARGS holds several flags on purpose
        timeout "${GPU_VIDEO_TIMEOUT_S:-270}" python3 -m bench.gpu_video --family "$family" \
            ${GPU_VIDEO_ARGS:---steps 8} --out "$out/gpu_$family.json" 2>&1 |
            tee "$out/gpu_$family.log" || status=1
    fi
done
exit "$status"
