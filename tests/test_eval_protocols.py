"""``seqvae eval``: named protocols give their frame and sample counts, evaluation folders never
collide, bad counts are usage errors, and memory does not grow with the number of samples."""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqvae.cli import main as cli_main
from seqvae.cli.evaluate import DEFAULT_SAMPLES, VIDEO_BATCH, video_settings
from seqvae.config import RunConfig, apply_overrides
from seqvae.evaluation import fvd as fvd_mod
from seqvae.evaluation.protocols import PROTOCOLS
from seqvae.training import train

REPO = Path(__file__).resolve().parents[1]

RAW = {
    "data": {"name": "pusher", "seq_len": 8, "eval_seq_len": 30, "action_conditioned": False, "num_objects": 1,
             "num_test": 8, "num_val": 8},
    "model": {"name": "svg", "backbone": "dcgan64", "width": 8, "g_dim": 16, "z_dim": 4, "rnn_size": 16,
              "n_past": 2, "n_future": 6, "n_eval": 6},
    "likelihood": {"name": "optimal_sigma"},
    "train": {"steps": 1, "batch_size": 4, "eval_every": 1, "eval_batches": 1, "image_every": 0, "log_every": 1},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "svg"
    return train(RunConfig.from_dict(apply_overrides(RAW, [f"train.out_dir={out}"])), progress=False)


class StubEmbedder:
    """Stands in for I3D: records every clip shape it embeds; features are pixel statistics."""

    shapes: list[tuple[int, ...]] = []

    def __init__(self, weights=None, device="cpu", batch_size=4) -> None:
        pass

    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        StubEmbedder.shapes.append(tuple(videos.shape))
        v = videos.float().flatten(2)
        return torch.cat([v.mean(2), v.std(2)], 1).double()   # [B, 2T]


def _args(**kw):
    base = dict(samples=None, sequences=None, lpips=None, fvd=None, fid=False)
    return argparse.Namespace(**{**base, **kw})


def test_protocols_fix_their_counts_unless_overridden():
    model = argparse.Namespace(n_past=2, n_eval=10)
    svg = video_settings(PROTOCOLS["svg"], _args(), model)
    assert (svg["context_frames"], svg["predicted_frames"], svg["samples"], svg["sequences"]) == (2, 28, 100, 256)
    assert svg["lpips"] and svg["fvd"] and svg["fvd_samples_per_clip"] == 1 and svg["fvd_context_included"]
    assert svg["deviations"] == {}
    gpt = video_settings(PROTOCOLS["videogpt"], _args(), model)
    assert (gpt["context_frames"], gpt["predicted_frames"], gpt["samples"], gpt["sequences"]) == (1, 15, 100, 256)
    assert not gpt["frame_metrics"] and gpt["fvd"] and gpt["fvd_samples_per_clip"] == 100
    default = video_settings(PROTOCOLS["default"], _args(), model)
    assert (default["context_frames"], default["predicted_frames"], default["samples"], default["sequences"],
            default["fvd"], default["lpips"]) == (2, 10, 20, 128, False, False)
    quick = video_settings(PROTOCOLS["svg"], _args(samples=3, sequences=4), model)
    assert quick["deviations"] == {"samples": {"protocol": 100, "used": 3}, "sequences": {"protocol": 256, "used": 4}}


def _alexnet_file(path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    convs = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
    state = {}
    for i, (cout, cin, k) in convs.items():
        state[f"features.{i}.weight"] = torch.randn(cout, cin, k, k, generator=g) / math.sqrt(cin * k * k)
        state[f"features.{i}.bias"] = torch.zeros(cout)
    torch.save(state, path)
    return path


def test_protocol_runs_give_the_stated_frame_and_sample_counts(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fvd_mod, "I3DEmbedder", StubEmbedder)
    StubEmbedder.shapes = []
    weights = _alexnet_file(tmp_path / "alexnet.pth")
    code = cli_main(["eval", str(run), "--protocol", "svg", "--samples", "3", "--sequences", "4", "--batches", "1",
                     "--lpips-weights", str(weights), "--out-dir", str(tmp_path / "ev")])
    assert code == 0
    (folder,) = (tmp_path / "ev").iterdir()
    record = json.loads((folder / "eval.json").read_text())
    res = record["results"]
    assert record["protocol"]["name"] == "svg" and record["settings"]["deviations"]["samples"]["used"] == 3
    assert (res["counts_context_frames"], res["counts_predicted_frames"], res["counts_samples"],
            res["counts_sequences"]) == (2, 28, 3, 4)
    assert res["fvd_clips"] == 4 and res["fvd_frames"] == 30 and res["fvd_context_included"] is True
    assert res["fvd_samples_per_clip"] == 1 and "lpips_mean" in res
    assert {s[1] for s in StubEmbedder.shapes} == {30}                       # context + 28 predicted, real and fake
    assert sum(s[0] for s in StubEmbedder.shapes) == 12                     # 4 true, 4 copy-last, 4 sampled clips
    assert res["fvd_embedded_clips"] == 12 and res["fvd_embed_seconds"] > 0  # the FVD cost is recorded
    assert "fvd_copy_last" in res
    rows = (folder / "curves.csv").read_text().splitlines()
    assert rows[1].split(",")[0] == "3" and rows[-1].split(",")[0] == "30"  # frames 3 … 30 of the video
    assert (folder / "psnr.png").exists() and (folder / "lpips.png").exists()

    StubEmbedder.shapes = []
    code = cli_main(["eval", str(run), "--protocol", "videogpt", "--samples", "3", "--sequences", "4",
                     "--batches", "1", "--out-dir", str(tmp_path / "ev")])
    assert code == 0
    folder = max((tmp_path / "ev").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    res = json.loads((folder / "eval.json").read_text())["results"]
    assert (res["counts_context_frames"], res["counts_predicted_frames"], res["counts_samples"]) == (1, 15, 3)
    assert res["fvd_samples_per_clip"] == 3 and res["fvd_frames"] == 16 and "fvd_std" in res and "fvd_pooled" in res
    assert {s[1] for s in StubEmbedder.shapes} == {16} and not (folder / "curves.csv").exists()
    assert res["fvd_embedded_clips"] == 4 + 4 + 3 * 4                       # true, copy-last, 3 sample sets
    assert "psnr_mean" not in res                                            # FVD only
    # a protocol longer than the test sequences is a clear error, not a shorter evaluation
    code = cli_main(["eval", str(run), "data.eval_seq_len=12", "--protocol", "srvp", "--samples", "1",
                     "--sequences", "2", "--batches", "1", "--no-lpips", "--no-fvd", "--out-dir", str(tmp_path / "x")])
    assert code == 2 and "30 frames" in capsys.readouterr().err


def test_evaluations_never_overwrite_each_other(run, tmp_path, capsys):
    args = ["eval", str(run), "--samples", "2", "--sequences", "2", "--batches", "1", "--out-dir", str(tmp_path)]
    assert cli_main(args) == 0
    first = capsys.readouterr().out
    (one,) = tmp_path.iterdir()
    before = {p.name: p.read_bytes() for p in one.iterdir()}
    assert cli_main(args) == 0
    second = capsys.readouterr().out
    folders = sorted(tmp_path.iterdir())
    assert len(folders) == 2 and one in folders
    assert {p.name: p.read_bytes() for p in one.iterdir()} == before          # the first is untouched
    other = next(f for f in folders if f != one)
    assert f"evaluation written to {one}" in first and f"evaluation written to {other}" in second
    assert one.name == "default-test-2ctx-6pred-2samples-2seq" and other.name == one.name + "-2"
    record = json.loads((other / "eval.json").read_text())
    assert record["command"].startswith("seqvae eval ") and record["settings"]["samples"] == 2


def test_the_default_evaluation_of_a_demo_sized_run_is_a_tenth_of_the_published_protocols_work():
    """Cost without timing: the futures (samples x sequences) and batches the defaults imply for
    configs/demo/svg.yaml, against the svg protocol's 100 x 256 (over half an hour on a 2-core CPU)."""
    cfg = RunConfig.load(REPO / "configs/demo/svg.yaml")
    model = argparse.Namespace(n_past=cfg.model.n_past, n_eval=cfg.model.n_eval)
    default = video_settings(PROTOCOLS["default"], _args(), model)
    sequences = min(default["sequences"], cfg.data.num_test)
    futures = default["samples"] * sequences
    assert (futures, -(-sequences // VIDEO_BATCH)) == (2560, 16)
    svg = video_settings(PROTOCOLS["svg"], _args(), model)
    assert 10 * futures <= svg["samples"] * svg["sequences"]


def test_the_default_evaluation_says_its_work_before_it_starts(run, tmp_path, capsys):
    assert cli_main(["eval", str(run), "--batches", "1", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    plan = next(line for line in out.splitlines() if line.startswith("video metrics:"))
    assert plan.startswith(f"video metrics: 8 sequences x {DEFAULT_SAMPLES} sampled futures of 6 frames "
                           f"({8 * DEFAULT_SAMPLES} futures) in 1 batch;")
    assert out.index(plan) < out.index("video (")                       # before the first batch's progress line
    (folder,) = tmp_path.iterdir()
    record = json.loads((folder / "eval.json").read_text())
    assert record["settings"]["samples"] == DEFAULT_SAMPLES and record["results"]["counts_sequences"] == 8


@pytest.mark.parametrize("flag,value", [("--samples", "0"), ("--sequences", "0"), ("--samples", "-3"),
                                        ("--batches", "-1"), ("--samples", "many")])
def test_bad_counts_are_usage_errors(flag, value, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["eval", "somewhere", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and ("at least" in err or "integer" in err)


MEMORY_SCRIPT = r"""
import sys, torch
from seqvae.data.spec import DataSpec
from seqvae.evaluation.video import evaluate_video

class Noisy(torch.nn.Module):
    n_past, n_eval, z_dim, action_dim = 2, 10, 1, 0
    spec = DataSpec(3, 64, 64, 12)
    def predict(self, context, n_future, actions=None, generator=None, sample_pixels=False, noise=None):
        frames = context[:, -1:].expand(-1, n_future, -1, -1, -1)
        return (frames + 0.05 * noise[:, -n_future:, :, None, None]).clamp(0, 1)
    def rollout_row_bytes(self, horizon, keep_frames):
        return 4 * 3 * 64 * 64 * (horizon + 1)

data = [{"frames": torch.randint(0, 256, (12, 3, 64, 64), dtype=torch.uint8,
                                 generator=torch.Generator().manual_seed(i))} for i in range(4)]
r = evaluate_video(Noisy(), data, n_samples=int(sys.argv[1]), n_sequences=4, batch_size=4,
                   device=torch.device("cpu"), chunk=4)
assert r.curves["psnr"].shape == (4, 10)
print(int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
def test_evaluation_memory_does_not_grow_with_the_number_of_samples():
    """8 vs 128 samples of 4 sequences × 10 frames: all samples at once would hold 128 × 2 MB of
    frames (×19 with the old float64 copies); streamed in chunks of 4 the peak stays put (the
    allocator's noise is a few tens of MB)."""
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    peaks = [int(subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(n)], capture_output=True, text=True,
                                check=True, env=env).stdout.split()[-1]) for n in (8, 128)]
    assert peaks[1] - peaks[0] < 100, f"peak RSS {peaks[0]} MB with 8 samples, {peaks[1]} MB with 128"
