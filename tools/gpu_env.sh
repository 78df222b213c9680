# Sourced by tools/gpu_check.sh and tools/gpu_run.sh: pick the Python, install the carried
# wheels (tools/wheels/) for modules that are missing, and say which modules still are.
# Python: $PYTHON, else this checkout's .venv, else python3 (the device machine's own torch).
# Wheels are installed only for missing modules (never replacing what the machine has), with
# --no-index (nothing is fetched); a wheel's name up to its first '-' is its module's name for
# every wheel kept there. Pure-Python: einops, tqdm, pytest and its own; compiled: crc32c
# (cp312, x86-64: the device's python3 is 3.12), which `import seqvae.cli` needs.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
for whl in tools/wheels/*.whl; do
    [ -e "$whl" ] || continue
    mod=$(basename "$whl"); mod=${mod%%-*}
    if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$mod') is None)" 2>/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps "$whl" || echo "gpu_env: installing $whl failed" >&2
    fi
done
missing=$("$PY" - <<'PYEOF'
import importlib.util
need = ["torch", "numpy", "einops", "yaml", "tqdm", "PIL", "av", "pytest", "crc32c", "safetensors"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ]; then
    echo "gpu_env: missing Python modules: $missing (bring them as wheels in tools/wheels/)" >&2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
