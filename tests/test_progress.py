"""Long commands show progress: a bar on a terminal, plain lines in a log
(:class:`seqvae.progress.Bar`); ``seqvae eval`` per batch with the clips I3D embedded for
FVD counted, ``seqvae plan`` per episode."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch

from seqvae.cli import main as cli_main
from seqvae.config import RunConfig, apply_overrides
from seqvae.evaluation import fvd as fvd_mod
from seqvae.progress import Bar
from seqvae.training import train

RAW = {
    "data": {"name": "pusher", "seq_len": 6, "eval_seq_len": 10, "action_conditioned": False, "num_objects": 1,
             "num_test": 24, "num_val": 8},
    "model": {"name": "svg", "backbone": "dcgan64", "width": 8, "g_dim": 16, "z_dim": 4, "rnn_size": 16,
              "n_past": 2, "n_future": 4, "n_eval": 8},
    "likelihood": {"name": "optimal_sigma"},
    "train": {"steps": 1, "batch_size": 4, "eval_every": 1, "eval_batches": 1, "image_every": 0, "log_every": 1},
}


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_in_a_log_count_and_say_what_is_left():
    out = io.StringIO()
    with Bar(4, "video", "batches", interval=0, stream=out) as bar:
        for i in range(4):
            bar.update(1, sequences=f"{8 * (i + 1)}/32")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert re.match(r"video 1/4 batches \(\d+ s, about \d+ s left\)  sequences 8/32$", lines[0]), lines[0]
    assert lines[-1].startswith("video 4/4 batches (") and "left" not in lines[-1]


def test_a_log_gets_at_most_a_line_per_interval_and_always_the_last_and_the_messages():
    out = io.StringIO()
    bar = Bar(100, "bound", "batches", interval=3600, stream=out)
    for i in range(100):
        bar.update(1, message="episode done" if i == 50 else None)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("bound 1/100")            # the first, the message, the last
    assert lines[1].startswith("episode done  [bound 51/100") and lines[2].startswith("bound 100/100")


def test_a_terminal_gets_a_bar():
    out = TTY()
    with Bar(3, "plan", "episodes", stream=out) as bar:
        bar.update(1, message="[random] episode 1/3: start 0.5 -> final 0.4 (0.1 s)")
        bar.update(2)
    text = out.getvalue()
    assert "\r" in text and "3/3" in text and "[random] episode 1/3" in text


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "svg"
    return train(RunConfig.from_dict(apply_overrides(RAW, [f"train.out_dir={out}"])), progress=False)


class CountingEmbedder:
    """Stands in for I3D: features are pixel statistics."""

    def __init__(self, weights=None, device="cpu", batch_size=4) -> None:
        pass

    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        v = videos.float().flatten(2)
        return torch.cat([v.mean(2), v.std(2)], 1).double()


def test_seqvae_eval_reports_every_batch_and_the_fvd_clips_embedded(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fvd_mod, "I3DEmbedder", CountingEmbedder)
    code = cli_main(["eval", str(run), "--samples", "2", "--sequences", "20", "--fvd", "--out-dir", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert re.search(r"^bound 6/6 batches", out, re.M)                          # 24 test sequences, batches of 4
    video = [line for line in out.splitlines() if line.startswith("video (2 samples per sequence)")]
    assert [line.split()[5] for line in video] == ["1/3", "2/3", "3/3"]         # 20 sequences in batches of 8
    # each sequence: its true clip, the copy-last baseline's, one sampled clip (FVD's default)
    assert "sequences 8/20  I3D clips 24/60" in video[0] and "sequences 20/20  I3D clips 60/60" in video[-1]


def test_seqvae_plan_reports_every_episode(tmp_path, capsys):
    code = cli_main(["plan", "plan.episodes=2", "plan.methods=[random, true_sim]", "plan.render_episodes=0",
                     "plan.cem.candidates=20", "plan.cem.elites=4", "plan.cem.iterations=1", "plan.steps=4",
                     f"out_dir={tmp_path}"])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "episode" in line and "[plan" in line]
    assert [re.search(r"\[plan (\d+/\d+) episodes", line).group(1) for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert lines[0].startswith("[random] episode 1/2:") and "left" in lines[0]
    assert lines[-1].startswith("[true_sim] episode 2/2:")
