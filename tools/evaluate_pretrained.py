#!/usr/bin/env python
"""The quality figures of a pusher model on held-out data (what the model cards report).

    python tools/evaluate_pretrained.py --pretrained pusher-actions --write-card-figures
    python tools/evaluate_pretrained.py runs/pusher_actions_pretrained --episodes 10

Held out: the test split of the model's own data config (its items come from a seed
stream no training item uses), and planning episodes from ``--plan-seed`` (default 1000;
nothing was tuned on these). Figures:

* action-conditioned models: object motion under the true actions (``--sequences`` 64,
  16 samples, all predicted frames: 28): predicted / true travel of the objects that move,
  best-of-16 final object error against the stay-put error; closed-loop planning success
  (``--episodes`` 50) for random actions, CEM with the true simulator and CEM with the
  model, with seconds per episode.
* action-free models: best-of-16 PSNR / SSIM against copy-last-frame over 32 sequences and
  20 predicted frames, and the same object-motion figures.

``--write-card-figures`` stores them as ``seqvae/pretrained/<file>.figures.json`` for the
demo and rewrites the "Held-out figures" section of the model card (``<file>.md``, from that
heading to the end) from them; the rest of the card is written by hand.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from seqvae import pretrained, registry
from seqvae.build import build_data
from seqvae.cli import USER_ERRORS, user_message
from seqvae.cli.plan import load_plan_config
from seqvae.control.harness import describe_protocol, evaluate_planning
from seqvae.evaluation.video import evaluate_video
from seqvae.io import atomic_write_text
from seqvae.loading import load_model, model_source
from seqvae.models.base import is_video_model
from seqvae.worlds.pusher.motion import ObjectMotionMetric


def motion_and_frames(model, cfg, sequences: int, samples: int) -> dict:
    test = build_data(cfg, "test")
    metric = ObjectMotionMetric()
    start = time.perf_counter()
    result = evaluate_video(model, test, n_samples=samples, n_sequences=sequences, device=torch.device("cpu"),
                            metrics=[metric])
    m = metric.result()
    n_future = result.curves["psnr"].shape[1]
    return {
        "sequences": sequences, "samples": samples, "predicted_frames": n_future,
        "psnr_best": result.summary()["psnr_mean"], "ssim_best": result.summary()["ssim_mean"],
        "psnr_copy_last": result.summary()["copy_last_psnr_mean"],
        "ssim_copy_last": result.summary()["copy_last_ssim_mean"],
        "objects": m.objects, "moving_objects": m.moving, "true_travel": m.true_displacement,
        "predicted_travel": m.predicted_displacement, "travel_ratio": m.predicted_displacement / m.true_displacement,
        "best_final_error": m.best_error, "stay_put_error": m.true_displacement,
        "error_ratio": m.best_error / m.true_displacement, "tracker_floor": m.tracker_error,
        "seconds": time.perf_counter() - start,
    }


def planning(model, cfg, episodes: int, seed: int, out_dir: Path | None) -> dict:
    """Closed-loop planning with the shipped protocol (``configs/plan/pusher.yaml``)."""
    plan = load_plan_config(None, [f"plan.episodes={episodes}", f"plan.seed={seed}",
                                   "plan.methods=[random, true_sim, learned]",
                                   f"plan.render_episodes={3 if out_dir else 0}"]).plan
    world = registry.world("pusher")
    result = evaluate_planning(world, plan, model=model, env=world.make_env(cfg.data), out_dir=out_dir,
                               log=lambda _: None)
    return {"episodes": episodes, "seed": seed, "threshold": result["threshold"],
            "mean_start_distance": result["mean_start_distance"],
            "settings": describe_protocol(plan),
            "methods": {name: {k: s[k] for k in ("success_rate", "mean_final_distance", "seconds_per_episode")}
                        for name, s in result["methods"].items()}}


CARD_SECTION = "## Held-out figures"
PLAN_SEED = 1000   # --plan-seed's default (a card's command names another)


def card_section(figures: dict, command: str) -> str:
    """The model card's held-out figures section, rendered from ``figures``."""
    m = figures["motion"]
    lines = [CARD_SECTION, "",
             f"`{command}` on the test split (item seeds of split `{figures['test_split']}`, data seed "
             f"{figures['data_seed']}; nothing was tuned on it), step {figures['step']}, {m['sequences']} sequences, "
             f"{m['samples']} samples each, {m['predicted_frames']} predicted frames"
             + (" under the true actions:" if "planning" in figures else ":"), "",
             "| figure | value |", "|---|---:|",
             f"| best of {m['samples']} PSNR / SSIM | {m['psnr_best']:.2f} dB / {m['ssim_best']:.3f} |",
             f"| copy last context frame PSNR / SSIM | {m['psnr_copy_last']:.2f} dB / {m['ssim_copy_last']:.3f} |",
             f"| objects that move (> 0.15 table units) | {m['moving_objects']} of {m['objects']}, true travel "
             f"{m['true_travel']:.3f} |",
             f"| predicted travel (mean over samples) | {m['predicted_travel']:.3f} ({m['travel_ratio']:.0%} of the "
             "truth) |",
             f"| best sample's final object error vs staying put | {m['best_final_error']:.3f} vs "
             f"{m['stay_put_error']:.3f} ({m['error_ratio']:.0%}) |",
             f"| colour tracker's own error on true frames | {m['tracker_floor']:.3f} |"]
    if "planning" in figures:
        p = figures["planning"]
        lines += ["", f"Closed-loop planning, {p['episodes']} episodes from seed {p['seed']} (held out), "
                      f"{p['settings']}; success = object 0 within {p['threshold']:.2f} of the goal; mean start "
                      f"distance {p['mean_start_distance']:.3f}:", "",
                  "| method | success | mean final distance | s / episode |", "|---|---:|---:|---:|"]
        for method, r in p["methods"].items():
            lines.append(f"| {method} | {r['success_rate']:.0%} | {r['mean_final_distance']:.3f} | "
                         f"{r['seconds_per_episode']:.1f} |")
    return "\n".join(lines) + "\n"


def rewrite_card(card: Path, section: str) -> None:
    text = card.read_text(encoding="utf-8")
    head = text.split(CARD_SECTION, 1)[0] if CARD_SECTION in text else text.rstrip("\n") + "\n\n"
    atomic_write_text(card, head + section)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and evaluate; an error the user can fix (a missing, crafted or
    damaged file, a model this tool does not evaluate) is one line and exit status 2, as in seqvae."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", default="", help="a run folder or checkpoint (or --pretrained)")
    parser.add_argument("--pretrained", default="", help="a shipped model by name")
    parser.add_argument("--sequences", type=int, default=0, help="test sequences (default 64 with actions, else 32)")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--episodes", type=int, default=50, help="planning episodes (action-conditioned models)")
    parser.add_argument("--plan-seed", type=int, default=PLAN_SEED)
    parser.add_argument("--out-dir", default="", help="also render planning episodes and write figures.json here")
    parser.add_argument("--write-card-figures", action="store_true", help="store the figures beside the shipped model")
    args = parser.parse_args(argv)
    try:
        return evaluate(args)
    except USER_ERRORS as err:
        print(f"evaluate_pretrained: error: {user_message(err)}", file=sys.stderr)
        return 2


def evaluate(args: argparse.Namespace) -> int:
    if args.write_card_figures and not args.pretrained:
        raise ValueError("--write-card-figures needs --pretrained NAME")
    torch.manual_seed(0)
    source = model_source(args.checkpoint, args.pretrained)
    model, cfg, payload = load_model(source)
    if not is_video_model(model) or cfg.data.name != "pusher":
        raise ValueError(f"{source} holds a {cfg.model.name} model of data set {cfg.data.name!r}; this tool evaluates "
                         "video models of the pusher world (seqvae eval evaluates any run)")
    conditioned = bool(model.action_dim)
    sequences = args.sequences or (64 if conditioned else 32)
    figures = {"model": source, "step": payload["step"], "data_seed": cfg.data.seed, "test_split": "test",
               "motion": motion_and_frames(model, cfg, sequences, args.samples)}
    print(json.dumps(figures["motion"], indent=2))
    out_dir = Path(args.out_dir) if args.out_dir else None
    if conditioned and args.episodes:
        figures["planning"] = planning(model, cfg, args.episodes, args.plan_seed, out_dir)
        print(json.dumps(figures["planning"], indent=2))
    if out_dir:
        atomic_write_text(out_dir / "figures.json", json.dumps(figures, indent=2) + "\n")
    if args.write_card_figures:
        entry = pretrained.info(args.pretrained)
        path = pretrained.HERE / entry.file.replace(".safetensors", ".figures.json")
        atomic_write_text(path, json.dumps(figures, indent=2) + "\n")
        command = f"python tools/evaluate_pretrained.py --pretrained {args.pretrained}"
        if conditioned and args.episodes != 50:
            command += f" --episodes {args.episodes}"
        if conditioned and args.episodes and args.plan_seed != PLAN_SEED:
            command += f" --plan-seed {args.plan_seed}"
        rewrite_card(pretrained.HERE / entry.card, card_section(figures, command))
        print(f"wrote {path} and the figures of {pretrained.HERE / entry.card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
