"""tools/gpu_check.sh --cpu-dry-run: the prepared device check runs end to end on CPU (so it cannot rot)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


# ------------------------------------------------- tools/gpu_run.sh: measure, then train, then bring back (issue 27)
sys.path.insert(0, str(ROOT / "tools"))
import gpu_pack  # noqa: E402
import gpu_run  # noqa: E402

MIB = 1 << 20
BACK_NAME = re.compile(r"[A-Za-z0-9._-]+")


def test_gpu_run_dry_run_measures_trains_and_brings_the_run_back(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    proc = subprocess.run([str(ROOT / "tools/gpu_run.sh"), "--cpu-dry-run", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["sections_done"] == ["train", "flops", "rollout", "cuda_tests", "pusher_step", "training",
                                       "returned"], report.get("errors")
    # the measurements: the real training step, eager and compiled, then its profile
    train = report["train"]
    assert [r["compiled"] for r in train] == [False, "eager"]
    for r in train + report["pusher_step"]:
        assert "error" not in r, r
        assert r["steps_per_s"] > 0 and r["loss_finite"] and r["skipped"] == 0 and not r["recompiled_while_timed"], r
        assert r["step"] == "seqvae.training.loop.train_step"
    assert report["pusher_step"][0]["model"]["action_conditioned"] and report["pusher_step"][0]["frames"] == 4
    profile = report["profile"]
    assert profile["launches_per_step"] > 100 and profile["top"] and 0 < profile["busy_fraction"] <= 1.5
    assert report["flops"]["best_bf16_step"]["backbone"] == "vgg64"
    assert {(r["rows"], r["cuda_graphs"]) for r in report["rollout"]} == {(p, g) for p in ("1x8x1", "2x4x2")
                                                                          for g in (True, False)}
    tests = report["cuda_tests"]["tests"]
    assert len(tests) >= 7 and set(tests.values()) == {"skipped"}, tests
    # the training: the dry run's tiny run continued for a few seconds and came back as a pack
    (row,) = report["training"]
    assert row["returncode"] == 0 and row["end_step"] > row["start_step"] == 2, row
    assert "train.time_limit_minutes=" in row["command"] and "--resume" in row["command"]
    parts = row["came_back"]["pack"]["parts"]
    assert len(parts) >= 2 and max(p["bytes"] for p in parts) <= 0.5 * MIB     # split at the dry run's part size
    # what the device tool would bring back: ≤ 8 files of ≤ 16 MiB, ≤ 2 folders down, plain names
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and sum(p.stat().st_size for p in files) <= 64 * MIB, files
    for p in files:
        rel = p.relative_to(out)
        assert p.stat().st_size <= 16 * MIB and len(rel.parts) <= 3 and all(BACK_NAME.fullmatch(x) for x in rel.parts)
    # and it is a run that resumes here, at the step it reached there
    from seqvae.checkpoint import load_checkpoint
    from seqvae.config import RunConfig
    from seqvae.training import train

    run = tmp_path / "back"
    assert gpu_pack.unpack(out / row["name"], run, sha256=row["came_back"]["pack"]["sha256"]) == row["end_step"]
    assert load_checkpoint(run / "checkpoint.pt")["step"] == row["end_step"]
    train(RunConfig.load(run / "config.yaml", [f"train.out_dir={run}"]), resume=True, dry_run=True,
          overrides=[f"train.out_dir={run}"], progress=False)


def test_gpu_pack_round_trip_and_what_it_rounds(tmp_path):
    import torch
    from tiny_runs import TINY_IMAGE_RUN

    from seqvae.checkpoint import load_checkpoint
    from seqvae.config import RunConfig, apply_overrides
    from seqvae.training import train

    run = train(RunConfig.from_dict(apply_overrides(TINY_IMAGE_RUN, [f"train.out_dir={tmp_path / 'run'}"])),
                progress=False)
    original = load_checkpoint(run / "checkpoint.pt")
    for weights, weight_rtol in (("fp32", 0.0), ("fp16", 2.0 ** -11)):
        manifest = gpu_pack.pack(run, tmp_path / f"carry_{weights}", part_mib=0.01, weights=weights,
                                 overrides=["train.steps=20"])
        pack_dir = tmp_path / f"carry_{weights}" / "run"
        assert len(manifest["parts"]) >= 2 and gpu_pack.overrides_of(pack_dir) == ["train.steps=20"]
        back = tmp_path / f"back_{weights}"
        assert gpu_pack.unpack(pack_dir, back, sha256=manifest["sha256"]) == original["step"]
        got = load_checkpoint(back / "checkpoint.pt")
        for key, value in original["model"].items():
            assert got["model"][key].dtype == value.dtype
            torch.testing.assert_close(got["model"][key], value, rtol=weight_rtol, atol=1e-7 if weight_rtol else 0)
        for key, state in original["optimizer"]["state"].items():
            for name in ("exp_avg", "exp_avg_sq"):                   # stored as bf16: 8 bits of mantissa
                torch.testing.assert_close(got["optimizer"]["state"][key][name], state[name], rtol=2.0 ** -8, atol=0)
            assert torch.equal(got["optimizer"]["state"][key]["step"], state["step"])
        assert (back / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
        with pytest.raises(FileExistsError):                          # never over a run
            gpu_pack.unpack(pack_dir, back)
    (pack_dir / f"{gpu_pack.PART_PREFIX}01").unlink()
    with pytest.raises(ValueError, match="missing"):
        gpu_pack.read_pack(pack_dir)


def test_what_comes_back_fits_the_device_tools_limits():
    big, mid = [("checkpoint.pack-00", 16 * MIB), ("checkpoint.pack-01", 14 * MIB)], [("w.safetensors", 7 * MIB)]
    limits = dict(files=6, file_bytes=16 * MIB, total_bytes=62 * MIB)
    chosen, left_out = gpu_run.plan_return([("a", [big, mid]), ("b", [big, mid]), ("c", [big, mid])], **limits)
    assert chosen == {"a": 0, "b": 0} and left_out == ["c"]        # two packs: 60 MiB, 4 files; no room for c
    chosen, _ = gpu_run.plan_return([("a", [big, mid]), ("b", [big + big, mid])], **limits)
    assert chosen == {"a": 0, "b": 1}                               # b's pack is too big: its weights instead
    oversize = [("checkpoint.pack-00", 17 * MIB)]
    assert gpu_run.plan_return([("a", [oversize, mid])], **limits)[0] == {"a": 1}


def test_gpu_run_header_gives_a_call_that_fits_the_device_tool():
    """The header's run(...) line is what someone with a GPU pastes: it must stay true."""
    header = (ROOT / "tools/gpu_run.sh").read_text()
    call = re.search(r'run\(command="([^"]+)", carry=(\[[^\]]*\]), timeout_s=(\d+)\)', header)
    assert call, "no run(command=..., carry=[...], timeout_s=...) line in tools/gpu_run.sh"
    command, carry, timeout_s = call.group(1), json.loads(call.group(2)), int(call.group(3))
    assert command.startswith("bash tools/gpu_run.sh") and len(command) <= 2000
    assert timeout_s <= 600 and gpu_run.GPU["budget_s"] + 30 <= timeout_s      # the script ends inside the call
    assert gpu_run.GPU["measure_s"] <= 260                                      # the measurements: ≈ 4 minutes
    ignored = {line.strip().strip("/") for line in (ROOT / ".gitignore").read_text().splitlines()}
    for path in carry:                                  # carried paths are the ignored ones (else they travel anyway)
        assert path.strip("/") in ignored, path
