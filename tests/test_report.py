"""A run's page (``seqvae report``, the trainer's ``index.html``) and the demo's page: every
file the page references exists, train and test are compared over the same window, the
demo's labels fit their cells and its planning text names the video's rows in their order;
in headless Chromium (``slow``) the page draws, every image and video loads, and the
console stays clean."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_runs import TINY_IMAGE_RUN

from seqvae.cli import main as cli_main
from seqvae.config import RunConfig, apply_overrides
from seqvae.render.report import curves_caption, referenced_files, training_curves, write_run_page
from seqvae.training import train

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.headless_chromium import blank_fraction, find_chromium  # noqa: E402

TINY_VIDEO_RUN = {
    "data": {"name": "pusher", "seq_len": 6, "eval_seq_len": 12, "action_conditioned": False, "num_objects": 1,
             "num_test": 8, "num_val": 8},
    "model": {"name": "svg", "backbone": "dcgan64", "width": 8, "g_dim": 16, "z_dim": 4, "rnn_size": 16,
              "n_past": 2, "n_future": 4, "n_eval": 10},
    "likelihood": {"name": "optimal_sigma"},
    "train": {"steps": 4, "batch_size": 4, "eval_every": 2, "eval_batches": 1, "image_every": 2, "log_every": 1,
              "checkpoint_every": 2},
}


@pytest.fixture(scope="module")
def video_run(tmp_path_factory) -> Path:
    """A tiny SVG run, then one ``seqvae eval`` of it: what a user's run folder holds."""
    out = tmp_path_factory.mktemp("runs") / "svg"
    run = train(RunConfig.from_dict(apply_overrides(TINY_VIDEO_RUN, [f"train.out_dir={out}"])), progress=False)
    assert cli_main(["eval", str(run), "--samples", "2", "--sequences", "2", "--batches", "1"]) == 0
    return run


def _lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_trainer_writes_the_page_and_every_file_it_references_exists(video_run):
    page = video_run / "index.html"
    assert page.is_file()
    text = page.read_text()
    assert "up to step 4" in text                        # refreshed at the last evaluation, not only the first
    refs = referenced_files(page)
    assert refs and all(p.is_file() for p in refs), [p for p in refs if not p.is_file()]
    names = {p.name for p in refs}
    assert "training.png" in names
    assert "step_0000004_predictions.mp4" in names       # the latest prediction video, not an earlier one
    assert "step_0000004_samples.png" in names and "step_0000004_reconstructions.png" in names
    assert "<script" not in text and "http://" not in text and "https://" not in text   # nothing from the network


def test_seqvae_report_shows_every_evaluation_with_its_figures_and_plots(video_run):
    assert cli_main(["report", str(video_run)]) == 0
    page = video_run / "index.html"
    text = page.read_text()
    folders = sorted(p for p in (video_run / "eval").iterdir() if p.is_dir())
    assert folders
    for folder in folders:
        record = json.loads((folder / "eval.json").read_text())
        assert folder.name in text
        assert f"{record['results']['bpd']:.4g}" in text                 # the figure, as the table prints it
        plots = sorted(folder.glob("*.png"))
        assert plots and all(p in referenced_files(page) for p in plots)  # psnr.png, ssim.png, ...
    assert "config.yaml" in text and "run.json" in text
    assert json.loads((video_run / "run.json").read_text())["device"] in text
    assert all(p.is_file() for p in referenced_files(page))


def test_seqvae_report_makes_the_prediction_video_of_a_run_that_has_none(video_run, tmp_path, capsys):
    """A run trained before the trainer saved videos: the page gets one made from the
    checkpoint; with a damaged checkpoint the page is still written, with a note."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(video_run, old)
    for video in (old / "images").glob("*.mp4"):
        video.unlink()
    assert cli_main(["report", str(old)]) == 0
    assert "step_0000004_predictions.mp4" in {p.name for p in referenced_files(old / "index.html")}
    assert (old / "images" / "step_0000004_predictions.mp4").is_file()
    (old / "images" / "step_0000004_predictions.mp4").unlink()
    (old / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert cli_main(["report", str(old)]) == 0
    assert "note: no prediction video" in capsys.readouterr().out
    assert all(p.is_file() for p in referenced_files(old / "index.html"))
    assert cli_main(["report", str(tmp_path / "nowhere")]) == 2
    (tmp_path / "empty").mkdir()
    assert cli_main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no seqvae run" in capsys.readouterr().err


def test_train_and_test_are_compared_over_the_same_window(video_run):
    """The test record carries the bound of the first ``seq_len`` frames of each sequence
    (what a training batch covers) and the bound of each frame; the step's training batch is
    also scored in eval mode. The per-frame bound averages to the whole bound, and the
    windowed one to the mean of its frames."""
    lines = _lines(video_run)
    test = [r for r in lines if r["split"] == "test"]
    assert [r["step"] for r in test] == [2, 4]
    assert [r["step"] for r in lines if r["split"] == "train_eval"] == [2, 4]
    for r in test:
        per_frame = r["bpd_per_frame"]
        assert r["window_frames"] == 6 and r["frames"] == 12 and len(per_frame) == 11
        assert np.mean(per_frame) == pytest.approx(r["bpd"], rel=1e-5)
        assert np.mean(per_frame[:5]) == pytest.approx(r["bpd_window"], rel=1e-5)
    caption = curves_caption(video_run)
    assert "first 6 frames" in caption and "12-frame sequences" in caption


def test_the_windowed_bound_is_the_bound_of_the_cut_sequences():
    """Every term of SVG's bound is causal, so the bound over the first w frames of T-frame
    sequences equals the bound of the same sequences cut to w frames (exactly, for a
    deterministic SVG, whose bound draws no noise)."""
    from seqvae.build import build_model
    from seqvae.evaluation.elbo import evaluate_elbo

    raw = apply_overrides(TINY_VIDEO_RUN, ["model.prior=none"])
    cfg = RunConfig.from_dict(raw)
    torch.manual_seed(0)
    from seqvae.data.spec import DataSpec

    model = build_model(cfg, DataSpec(3, 64, 64, 12)).eval()
    frames = torch.rand(3, 12, 3, 64, 64)
    frames[:, 6:] = 0.5                                          # later frames unlike the first six
    whole = evaluate_elbo(model, [{"frames": f} for f in frames], 3, torch.device("cpu"), window=6)
    cut = evaluate_elbo(model, [{"frames": f[:6]} for f in frames], 3, torch.device("cpu"))
    assert whole["neg_elbo_window"] == pytest.approx(cut["neg_elbo"], rel=1e-5)
    assert whole["bpd_window"] == pytest.approx(cut["bpd"], rel=1e-5)
    assert whole["bpd"] != pytest.approx(cut["bpd"], rel=1e-2)     # the whole sequences do differ
    # a window as long as the sequences is the whole bound (and is still reported as the window:
    # a run trained on whole sequences compares train and test over the same frames)
    same = evaluate_elbo(model, [{"frames": f[:6]} for f in frames], 3, torch.device("cpu"), window=6)
    assert same["window_frames"] == 6 and same["bpd_window"] == pytest.approx(cut["bpd"], rel=1e-5)


def test_an_old_run_trained_on_whole_test_length_sequences_is_not_called_a_different_window(tmp_path):
    """Logged before the windowed figure, but its test sequences are as long as its training
    windows (data.seq_len = data.eval_seq_len): the lines do compare over the same window."""
    run = tmp_path / "whole"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  name: pusher\n  seq_len: 30\n  eval_seq_len: 30\n")
    lines = [{"step": s, "split": "train", "bpd": -1.3 - 0.1 * s, "sigma": 0.1} for s in range(1, 6)]
    lines += [{"step": s, "split": "test", "bpd": -1.3, "sigma_ema": 0.1, "frames": 30} for s in (2, 4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert training_curves(run, tmp_path / "curves.png").stat().st_size > 1000
    caption = curves_caption(run)
    assert "same window" in caption and "a different window" not in caption


def test_an_old_run_whose_test_windows_differ_is_labelled_so(tmp_path):
    """A run logged before the windowed test figure: the curves still draw, and the caption
    says the two lines cover different windows instead of inviting a comparison."""
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  name: pusher\n  seq_len: 8\n")
    lines = [{"step": s, "split": "train", "bpd": -1.3 - 0.1 * s, "sigma": 0.1} for s in range(1, 6)]
    lines += [{"step": s, "split": "test", "bpd": -1.3, "sigma_ema": 0.1} for s in (2, 4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 6, "spl')
    assert training_curves(run, tmp_path / "curves.png").stat().st_size > 1000
    caption = curves_caption(run)
    assert "a different window" in caption and "first 8 frames" not in caption
    page = write_run_page(run)
    assert all(p.is_file() for p in referenced_files(page))


def test_a_run_without_a_test_evaluation_yet_is_not_described_with_a_test_line(tmp_path):
    """Stopped before its first evaluation: the caption says there is no test line yet
    (instead of describing a dashed line that is not drawn)."""
    run = tmp_path / "early"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  name: pusher\n  seq_len: 8\n")
    lines = [{"step": s, "split": "train", "bpd": -1.3 - 0.1 * s, "sigma": 0.1} for s in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    caption = curves_caption(run)
    assert "no test evaluation yet" in caption and "dashed" not in caption and "red dots" not in caption


def test_an_image_run_gets_a_page_too(tmp_path):
    run = train(RunConfig.from_dict(apply_overrides(TINY_IMAGE_RUN, [f"train.out_dir={tmp_path / 'img'}",
                                                                       "train.image_every=3"])), progress=False)
    page = run / "index.html"
    refs = referenced_files(page)
    assert all(p.is_file() for p in refs) and {"training.png", "step_0000006_samples.png"} <= {p.name for p in refs}
    assert not any(p.suffix == ".mp4" for p in refs)           # image models have no prediction video


# --------------------------------------------------------------------------- the demo's page
def test_the_demo_videos_labels_and_titles_fit_their_cells():
    from seqvae.cli.demo import ACTION_FREE_TITLE, ACTIONS_TITLE, action_free_panels, action_panels
    from seqvae.render import cut_labels

    frames = torch.rand(4, 12, 3, 64, 64)
    free = action_free_panels(frames, torch.rand(16, 4, 10, 3, 64, 64), torch.tensor([3, 0, 15, 7]), 2)
    acts = action_panels(frames, torch.rand(4, 3, 10, 3, 64, 64), 2)
    assert [p.label for p in free[:4]] == ["seq 0: truth", "best of 16 (3)", "sample 0", "sample 1"]
    assert cut_labels(free, columns=4, scale=2, title=ACTION_FREE_TITLE) == []
    assert cut_labels(acts, columns=4, scale=2, title=ACTIONS_TITLE) == []
    assert cut_labels([free[0].__class__(frames[0], "seq 0: ground truth", context=2)], scale=2) != []


def test_the_planning_text_names_the_rows_in_the_videos_order(tmp_path):
    """The rows of an episode video, top to bottom, are what the demo's heading says:
    render an episode whose methods are told apart by brightness and read the rows back."""
    from seqvae.cli.demo import planning_what
    from seqvae.control.episode_video import render_episode, row_order
    from seqvae.control.harness import METHOD_LABELS
    from seqvae.control.mpc import EpisodeRecord
    from seqvae.render import read_video

    def record(value: int, plans: bool) -> EpisodeRecord:
        frames = torch.full((4, 3, 16, 16), value, dtype=torch.uint8)
        rec = EpisodeRecord(frames=frames, actions=torch.zeros(3, 2), distances=torch.tensor([0.5, 0.4, 0.3, 0.1]))
        if plans:
            rec.plan_steps, rec.plan_frames = [0], [torch.full((10, 3, 16, 16), value, dtype=torch.uint8)]
        return rec

    records = {"random": record(30, False), "true_sim": record(200, True), "learned": record(120, True)}
    order = row_order(records)
    video = read_video(render_episode(tmp_path / "e.mp4", records, 0.2, scale=1))[0].astype(float)
    by_value = {200: "true_sim", 120: "learned", 30: "random"}
    heights = {}
    for value, name in by_value.items():          # where each method's (uniform) frames are in the video
        rows = np.where((np.abs(video - value) < 6).all(-1).sum(1) >= 12)[0]
        assert rows.size, name
        heights[name] = rows.mean()
    assert sorted(heights, key=heights.get) == order == ["true_sim", "learned", "random"]
    text = planning_what({"video_rows": order, "methods": records})
    positions = [text.index(METHOD_LABELS[name]) for name in order]
    assert positions == sorted(positions)


def test_the_demo_config_says_how_long_the_demo_trains():
    text = (ROOT / "configs" / "demo" / "svg.yaml").read_text()
    assert "10 minutes" not in text and "10 CPU minutes" not in text
    from seqvae.cli import parse

    assert f"{parse(['demo']).minutes:g} minutes" in text


# --------------------------------------------------------------------------- in a browser
@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="needs chromium (Debian: apt-get install chromium)")
def test_the_run_page_in_headless_chromium(video_run, tmp_path):
    """The page as a person's browser shows it: not blank, every image decoded, every video
    playable, nothing in the console."""
    from tools.headless_chromium import Chromium

    with Chromium(1280, 900) as browser:
        browser.open(str(video_run / "index.html"), settle=2.0)
        images = browser.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        videos = browser.evaluate("Promise.all(Array.from(document.querySelectorAll('video')).map(v => "
                                  "new Promise(ok => { const done = () => ok([v.getAttribute('src'), v.readyState, "
                                  "v.error && v.error.code, v.videoWidth]); if (v.readyState >= 2) done(); else "
                                  "{ v.addEventListener('loadeddata', done); v.addEventListener('error', done); "
                                  "setTimeout(done, 8000); } })))")
        shot = browser.screenshot(tmp_path / "page.png")
        errors = browser.console_errors()
    assert images and all(width > 0 for _, width in images), images
    assert videos and all(state >= 2 and error is None and width > 0 for _, state, error, width in videos), videos
    assert blank_fraction(shot) < 0.9
    assert errors == []
