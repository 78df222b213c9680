"""tools/gpu_check.sh --cpu-dry-run: the prepared device check runs end to end on CPU (so it cannot rot)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_a_full_report(tmp_path):
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(ROOT / "tools/gpu_check.sh"), "--cpu-dry-run", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["sections_done"] == ["cuda_tests", "rollout", "train", "flops"], report.get("errors")
    assert report["env"]["dry_run"] is True and report["env"]["device_name"] == "cpu"
    # the cuda subset was found and collected (all skipped without a GPU), not silently empty
    tests = report["cuda_tests"]["tests"]
    assert len(tests) >= 5 and set(tests.values()) == {"skipped"}, tests
    train = report["train"]
    assert {r["backbone"] for r in train} == {"vgg64", "dcgan64"}
    assert any(r["compiled"] for r in train) and any(not r["compiled"] for r in train)
    for r in train:
        assert "error" not in r, r
        assert r["steps_per_s"] > 0 and r["loss_finite"] and not r["recompiled_while_timed"], r
    flops = report["flops"]
    assert flops["flops_fwd_bwd"] > 1e8 and flops["best_bf16_step"]["backbone"] == "vgg64"
    assert flops["achieved_tflops"] > 0 and flops["fraction_of_peak"] is None   # no peak for a CPU
    rollout = report["rollout"]
    assert {r["rows"] for r in rollout} == {"1x8x1", "2x4x2"} and {r["cuda_graphs"] for r in rollout} == {True, False}
    for r in rollout:
        assert "error" not in r and r["frames_per_s"] > 0 and r["costs_finite"], r
