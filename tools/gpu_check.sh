#!/usr/bin/env bash
# The prepared device check (issue 15.3); see tools/gpu_check.py for what the report holds.
#   tools/gpu_check.sh [--out FILE]              on a CUDA machine with its own torch (≈ 8 min at most)
#   tools/gpu_check.sh --cpu-dry-run [--out F]   the same script on CPU at tiny sizes (≈ 1 min)
# Python: $PYTHON, else this checkout's .venv, else python3 (the device machine's own torch).
# Pure-Python dependencies missing there can travel as wheels in tools/wheels/ (installed
# with --no-index, nothing is fetched); the report lists what is still missing.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
if ls tools/wheels/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps tools/wheels/*.whl || echo "gpu_check: installing tools/wheels failed" >&2
fi
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
