#!/usr/bin/env bash
# The prepared device check (issue 15.3); see tools/gpu_check.py for what the report holds.
#   tools/gpu_check.sh [--out FILE]              on a CUDA machine with its own torch (≈ 8 min at most)
#   tools/gpu_check.sh --cpu-dry-run [--out F]   the same script on CPU at tiny sizes (≈ 1 min)
# tools/gpu_run.sh is the one-call run that measures first and then trains (issue 27).
# Python and the carried wheels: tools/gpu_env.sh. The benchmarks need torch, numpy, einops
# and tqdm only; the cuda tests also need yaml, PIL and av (not carried: av's wheel is large),
# and report a collection error where they are missing.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
if [[ " $* " == *" --cpu-dry-run "* ]]; then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}; fi
exec timeout 480 "$PY" tools/gpu_check.py "$@"
