#!/usr/bin/env bash
# The one prepared GPU run (issue 27.1): measurements first (≈ 4 min), then training of the
# packed runs in gpu_carry/ in the time left, then their checkpoints back; see tools/gpu_run.py.
#
# Whoever has a GPU next: pack the run(s) to continue, then make ONE device call.
#   1. here:  python tools/gpu_pack.py pack runs/<run> gpu_carry --override train.steps=<new total> \
#                 --override train.compile=false --override train.num_workers=7
#      (one shipped-size pusher run packs to ~29 MiB and travels beside the repository, ~18 MiB;
#      two need --weights fp16, ~22 MiB each; the working tree travels at most 64 MiB in all;
#      gpu_carry/ is ignored by git and named in carry)
#   2. the device tool's call:
#        run(command="bash tools/gpu_run.sh", carry=["gpu_carry"], timeout_s=600)
#      (600 s is the tool's limit for one command; the script's budget is 540 s: ≈ 250 s of
#      measurements, then training until 480 s, then packing what comes back)
#      Train only (e.g. a second call): command="bash tools/gpu_run.sh --skip-measure".
#      Measure only: no gpu_carry/ (carry=[]).
#   3. back here (the files lie under the call's files_at):
#        report.json                         the figures (copy it to tools/gpu_reports/<date>-<device>.json)
#        <run>/checkpoint.pack-00, -01, ...  python tools/gpu_pack.py unpack <files_at>/<run> runs/<run>_gpu
#                                            then `seqvae train runs/<run>_gpu/config.yaml --resume ...`
#        <run>/weights-fp16.safetensors      instead, where the pack did not fit: train.init_from=<it>
#
#   tools/gpu_run.sh --cpu-dry-run [--out DIR]   the whole script on CPU at tiny sizes (make test runs it)
# Python and the carried wheels: tools/gpu_env.sh. Output: $OUT (the device machine's), else --out.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
dry=0
if [[ " $* " == *" --cpu-dry-run "* ]]; then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}; dry=1; fi
out=${OUT:-gpu_run_out}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [ "${args[$i]}" = "--out" ] && out=${args[$((i + 1))]}; done
mkdir -p "$out"
limit=$([ $dry = 1 ] && echo 280 || echo 580)
timeout --signal=TERM --kill-after=15 "$limit" "$PY" tools/gpu_run.py --out "$out" "$@" 2>&1 | tee "$out/gpu_run.log"
exit "${PIPESTATUS[0]}"
