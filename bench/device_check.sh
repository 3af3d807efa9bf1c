#!/usr/bin/env bash
# The GPU checks, in one call on a lent device machine (its image has Python 3.12, PyTorch with CUDA and
# pytest, but no Ray, no diffusers and no network):
#
#   here:   make device-wheels                 # what the image lacks, as wheels, into .whl/ (git-ignored)
#   there:  bash bench/device_check.sh         # device `run` with carry [".whl"] and timeout_s 600
#
# The default (STAGES="tests checks svd") answers everything in one 10-minute call on an H100, each stage
# under its own limit so a slow one cannot starve the others; logs and JSON go to $OUT (the device tool
# brings them back):
#   machine.txt       the GPU, its driver, Python, torch, diffusers, transformers
#   tests  (<=170 s)  the gpu-marked tests of every tests/unit file that has one, with only the model
#                     fixtures (tests/conftest.py would import Ray): pytest_gpu.log
#   checks (<=75 s each, about 4 min in all)  bench.gpu_checks, each check in a process of its own; each
#                     prints what it finds (dtypes, A14B experts, offload parking, admission's readings,
#                     torch.compile's recompiles): checks.log and checks/*.json
#   svd    (<=150 s)  bench.gpu_svd at full SVD-XT size, 8 steps, uncompiled: the plain pipeline against the
#                     engine, plain side freed first: gpu_svd.log and gpu_svd.json
# Record the numbers in bench/RESULTS.md.
#
# Further calls, one stage each (STAGES=...):
#   svd with GPU_SVD_ARGS="" GPU_SVD_TIMEOUT_S=540: the full comparison, 25 steps, torch.compile included.
#   ltx, wan: bench.gpu_video at the published resolution; GPU_VIDEO_ARGS overrides the family's default
#     ("--steps 8" for LTX; "--steps 4 --frames 49" for Wan, see below), GPU_VIDEO_TIMEOUT_S (default 270).
#   step: bench.step_scheduling at SVD-XT size, the step loop against call batching under Poisson arrivals,
#     with STEP_ARGS (default "--model xt --scenes 12 --steps 4 --rounds 1 --rates near") and STEP_TIMEOUT_S
#     (default 480).
# Wan's default is cut to fit 270 s: building and saving Wan 2.2 TI2V-5B with UMT5-XXL (about 22 GB of
# bf16), loading it twice, and four decodes (a warm-up and a measured run per side) of 121 frames at
# 1280x704 through its 48-channel VAE would not. At 49 frames (2 s) the latents hold 13 frames where 121
# hold 31: a step's attention costs about a sixth, the rest of a step and each decode under half. Four
# measured steps still give the time per step (their median), and the resolution, which sets the memory
# per frame, stays 720p.
#
# Environment: WHEELS (default .whl), SITE (where they install, default /tmp/storyreel-device-site),
# STAGES, TESTS_TIMEOUT_S, CHECKS (default every check), CHECK_TIMEOUT_S, GPU_SVD_ARGS (default
# "--steps 8 --no-compile"; "--tiny" without a GPU), GPU_SVD_TIMEOUT_S, and those above.
set -uo pipefail

out=${OUT:-bench/out}
site=${SITE:-/tmp/storyreel-device-site}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "${WHEELS:-.whl}"/*.whl || exit 1
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

{
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    fi
    python3 -c "import sys, torch, diffusers, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$out/machine.txt"

status=0
for stage in ${STAGES:-tests checks svd}; do
    case "$stage" in
    tests)
        # Every file with a gpu-marked test, so tests added to any of them are collected.
        mapfile -t files < <(grep -l "mark.gpu" tests/unit/*.py)
        timeout "${TESTS_TIMEOUT_S:-170}" python3 -m pytest --noconftest -p tests.fixtures.models \
            -p no:cacheprovider -m gpu -q -rs "${files[@]}" 2>&1 | tee "$out/pytest_gpu.log" || status=1
        ;;
    checks)
        for check in ${CHECKS:-$(python3 -m bench.gpu_checks --list)}; do
            timeout "${CHECK_TIMEOUT_S:-75}" python3 -m bench.gpu_checks --check "$check" --out "$out/checks" 2>&1 ||
                echo "[check $check] ended with status $? (124: past its ${CHECK_TIMEOUT_S:-75} s)"
        done | tee "$out/checks.log"
        ;;
    svd)
        # shellcheck disable=SC2086 # GPU_SVD_ARGS holds several flags on purpose
        timeout "${GPU_SVD_TIMEOUT_S:-150}" python3 -m bench.gpu_svd ${GPU_SVD_ARGS---steps 8 --no-compile} \
            --out "$out/gpu_svd.json" 2>&1 | tee "$out/gpu_svd.log" || status=1
        ;;
    step)
        # shellcheck disable=SC2086 # STEP_ARGS holds several flags on purpose
        timeout "${STEP_TIMEOUT_S:-480}" python3 -m bench.step_scheduling \
            ${STEP_ARGS:---model xt --scenes 12 --steps 4 --rounds 1 --rates near} \
            --out "$out/step_scheduling.json" 2>&1 | tee "$out/step_scheduling.log" || status=1
        ;;
    ltx | wan)
        defaults="--steps 8"
        [ "$stage" = wan ] && defaults="--steps 4 --frames 49"
        # shellcheck disable=SC2086 # GPU_VIDEO_ARGS holds several flags on purpose
        timeout "${GPU_VIDEO_TIMEOUT_S:-270}" python3 -m bench.gpu_video --family "$stage" \
            ${GPU_VIDEO_ARGS:-$defaults} --out "$out/gpu_$stage.json" 2>&1 |
            tee "$out/gpu_$stage.log" || status=1
        ;;
    *)
        echo "unknown stage: $stage (tests, checks, svd, step, ltx, wan)" >&2
        status=1
        ;;
    esac
done
exit "$status"
