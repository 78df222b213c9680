#!/usr/bin/env bash
# The prepared device check (issue 15.3); see tools/gpu_check.py for what the report holds.
#   tools/gpu_check.sh [--out FILE]              on a CUDA machine with its own torch (≈ 8 min at most)
#   tools/gpu_check.sh --cpu-dry-run [--out F]   the same script on CPU at tiny sizes (≈ 1 min)
# Python: $PYTHON, else this checkout's .venv, else python3 (the device machine's own torch).
# Pure-Python dependencies missing there travel as wheels in tools/wheels/ (einops, tqdm,
# pytest and its own; installed with --no-index, nothing is fetched). The benchmarks need
# torch, numpy, einops and tqdm only; the cuda tests also need yaml, PIL, av and crc32c
# (compiled packages: not carried), and report a collection error where they are missing.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
# wheels only for modules that are missing (never replace what the machine has); the wheel's
# name up to its first '-' is its module's name for every wheel kept there
for whl in tools/wheels/*.whl; do
    [ -e "$whl" ] || continue
    mod=$(basename "$whl"); mod=${mod%%-*}
    if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$mod') is None)" 2>/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps "$whl" || echo "gpu_check: installing $whl failed" >&2
    fi
done
missing=$("$PY" - <<'PYEOF'
import importlib
need = ["torch", "numpy", "einops", "yaml", "tqdm", "PIL", "av", "pytest"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ]; then
    echo "gpu_check: missing Python modules: $missing (bring them as wheels in tools/wheels/)" >&2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ " $* " == *" --cpu-dry-run "* ]]; then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}; fi
exec timeout 480 "$PY" tools/gpu_check.py "$@"
