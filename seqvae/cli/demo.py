"""``seqvae demo`` / ``make demo``: the toolkit at work on the embedded pushing world.

1. **Training**: SVG-LP with the optimal-σ decoder (β = 1) from scratch on the pushing
   videos (``configs/demo/svg.yaml``) for ``--minutes`` (the trainer's progress, σ and the
   bound falling; the step count depends on the machine and is printed).
2. **Predictions of the shipped models** (:mod:`seqvae.pretrained`): the action-free model's
   best of 16 futures and other samples next to the truth; the action-conditioned model's
   futures under the true actions and under other actions (mirrored, none).
3. **Planning**: closed-loop episodes, CEM with the shipped action-conditioned model (and
   random actions and CEM with the true simulator on the same episodes), goal marked,
   planned futures shown.
4. **Figures**: the shipped models' held-out figures (their cards), and this run's own.
5. ``index.html`` in the demo folder shows the videos, the training curves and the figures,
   each with what it compares; its run sections are the from-scratch run's own page
   (:func:`seqvae.render.report.run_sections`, what ``seqvae report`` writes).

A finished training run in the folder is reused (never deleted): delete it or pass
another ``--out-dir`` to train again.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from einops import repeat

from seqvae import pretrained, registry, render
from seqvae.build import build_data
from seqvae.checkpoint import load_checkpoint
from seqvae.cli.plan import load_plan_config
from seqvae.config import RunConfig, find_repo_file
from seqvae.control.harness import METHOD_LABELS, evaluate_planning
from seqvae.evaluation.curves import best_of_n
from seqvae.evaluation.metrics import psnr
from seqvae.evaluation.video import MAX_DB, draw_futures, evaluate_video
from seqvae.io import atomic_write_text, new_folder
from seqvae.loading import load_model
from seqvae.registry import video_metrics_for
from seqvae.render.report import Figure, Section, run_sections, write_page
from seqvae.training import train

DEMO_CONFIG = "configs/demo/svg.yaml"
ACTION_FREE, ACTIONS = "pusher", "pusher-actions"      # the shipped models the demo shows
SEQUENCES, SAMPLES = 4, 16


def train_from_scratch(run_dir: Path, minutes: float, overrides: tuple[str, ...]) -> Path:
    cfg = RunConfig.load(find_repo_file(DEMO_CONFIG),
                         [f"train.out_dir={run_dir}", f"train.time_limit_minutes={minutes}", *overrides])
    if (run_dir / "checkpoint.pt").exists():
        step = load_checkpoint(run_dir / "checkpoint.pt")["step"]
        print(f"[1/4] found a trained demo run in {run_dir} (step {step}); reusing it "
              f"(delete it or pass --out-dir to train again)")
        return run_dir
    print(f"[1/4] training SVG-LP + optimal-σ decoder from scratch on the pushing videos for {minutes:g} min ...")
    return train(cfg)


def test_batch(cfg: RunConfig, count: int, device: torch.device) -> dict[str, torch.Tensor]:
    test = build_data(cfg, "test")
    items = test.__getitems__(list(range(count)))
    batch = {k: torch.stack([it[k] for it in items]).to(device) for k in items[0] if k in ("frames", "actions")}
    batch["frames"] = batch["frames"].float() / 255                                     # [B, T, C, H, W]
    return batch


ACTION_FREE_TITLE = "action-free SVG-LP (shipped): green = context, red = predicted"
ACTIONS_TITLE = "action-conditioned SVG-LP (shipped): one context, three action sequences"
ACTION_LABELS = ("true actions", "mirrored actions", "gripper held still")


def action_free_panels(frames: torch.Tensor, samples: torch.Tensor, best: torch.Tensor, n_ctx: int) -> list:
    """Per sequence of ``frames [B, n_ctx + F, C, H, W]``: truth | best of S | two other
    samples (``samples [S, B, F, C, H, W]`` predicted after the context; ``best [B]``)."""
    panels = []
    n_samples = samples.shape[0]
    for b in range(frames.shape[0]):
        videos = torch.cat([repeat(frames[b, :n_ctx], "t c h w -> s t c h w", s=n_samples), samples[:, b]], 1)
        panels += render.prediction_panels(frames[b].cpu(), videos.cpu(), n_ctx, best_index=int(best[b]),
                                           max_samples=3, prefix=f"seq {b}: ", truth_label="truth")
    return panels


def action_free_video(model, cfg, out: Path, device: torch.device) -> Path:
    """Per test sequence: truth | best of 16 (PSNR) | two other samples."""
    batch = test_batch(cfg, SEQUENCES, device)
    n_ctx, frames = model.n_past, batch["frames"]
    n_future = min(model.n_eval, frames.shape[1] - n_ctx)
    samples = draw_futures(model, batch, n_future, SAMPLES, torch.Generator(device=device).manual_seed(0))
    truth = frames[:, n_ctx:n_ctx + n_future]
    best = best_of_n(psnr(samples, repeat(truth, "b t c h w -> s b t c h w", s=SAMPLES), max_db=MAX_DB), True).index
    panels = action_free_panels(frames[:, :n_ctx + n_future], samples, best, n_ctx)
    return render.write_mp4(out, render.compose(panels, columns=4, scale=2, title=ACTION_FREE_TITLE), fps=6)


def action_panels(frames: torch.Tensor, predicted: torch.Tensor, n_ctx: int) -> list:
    """Per sequence of ``frames [B, n_ctx + F, C, H, W]``: truth | the predictions
    ``predicted [B, 3, F, C, H, W]`` under :data:`ACTION_LABELS`."""
    panels = []
    for b in range(frames.shape[0]):
        panels.append(render.Panel(frames[b].cpu(), f"seq {b}: truth", context=n_ctx, ground_truth=True))
        for k, label in enumerate(ACTION_LABELS):
            panels.append(render.Panel(torch.cat([frames[b, :n_ctx], predicted[b, k]]).cpu(), label, context=n_ctx))
    return panels


def action_video(model, cfg, out: Path, device: torch.device) -> Path:
    """Per test sequence: truth | predicted under the true actions | under the mirrored
    actions | with the gripper held still — the same latent noise for all three."""
    batch = test_batch(cfg, SEQUENCES, device)
    n_ctx, frames, actions = model.n_past, batch["frames"], batch["actions"]
    n_future = min(model.n_eval, frames.shape[1] - n_ctx)
    future = actions[:, n_ctx - 1:n_ctx - 1 + n_future]
    candidates = torch.stack([future, -future, torch.zeros_like(future)], 1)          # [B, 3, T, A]
    from seqvae.control.rollout import rollout

    out_frames = rollout(model, frames[:, :n_ctx], candidates, 1, generator=torch.Generator().manual_seed(0),
                         context_actions=actions[:, :n_ctx - 1]).frames[:, :, 0]      # [B, 3, T, C, H, W]
    panels = action_panels(frames[:, :n_ctx + n_future], out_frames, n_ctx)
    return render.write_mp4(out, render.compose(panels, columns=4, scale=2, title=ACTIONS_TITLE), fps=6)


def planning_episodes(model, cfg, out_dir: Path, episodes: int) -> dict[str, Any]:
    """Closed-loop episodes with the shipped planner protocol (``configs/plan/pusher.yaml``)."""
    plan = load_plan_config(None, [f"plan.episodes={episodes}", "plan.seed=7", f"plan.render_episodes={episodes}",
                                   "plan.methods=[random, true_sim, learned]"]).plan
    world = registry.world("pusher")
    return evaluate_planning(world, plan, model=model, env=world.make_env(cfg.data), out_dir=out_dir,
                             log=lambda _: None)


def card_figures(name: str) -> dict[str, Any] | None:
    """The held-out figures stored beside a shipped model (``tools/evaluate_pretrained.py``)."""
    path = pretrained.HERE / pretrained.info(name).file.replace(".safetensors", ".figures.json")
    return json.loads(path.read_text()) if path.is_file() else None


def figure_lines(page: dict[str, Any]) -> list[str]:
    """What the demo prints: this run's figures, then the shipped models' measured ones."""
    own = page["own"]
    lines = [f"from-scratch run ({own['steps']} steps; the count depends on the machine's speed and load):",
             f"  best of {SAMPLES} PSNR {own['psnr_mean']:.2f} dB / SSIM {own['ssim_mean']:.3f} vs copy-last "
             f"{own['copy_last_psnr_mean']:.2f} dB / {own['copy_last_ssim_mean']:.3f} (16 test sequences)"]
    for name, fig in page["cards"].items():
        if fig is None:
            lines.append(f"{name}: no measured figures shipped")
            continue
        m = fig["motion"]
        lines += [f"shipped model {name!r} (step {fig['step']}; held-out test split, {m['sequences']} sequences, "
                  f"{m['samples']} samples, {m['predicted_frames']} predicted frames):",
                  f"  best of {m['samples']} PSNR {m['psnr_best']:.2f} dB / SSIM {m['ssim_best']:.3f} vs copy-last "
                  f"{m['psnr_copy_last']:.2f} dB / {m['ssim_copy_last']:.3f}",
                  f"  objects that move travel {m['true_travel']:.2f} table units; "
                  f"predicted {m['predicted_travel']:.2f} ({m['travel_ratio']:.0%} of the truth); "
                  f"best sample's final error {m['best_final_error']:.2f} "
                  f"vs {m['stay_put_error']:.2f} staying put ({m['error_ratio']:.0%})"]
        if "planning" in fig:
            pl = fig["planning"]
            lines.append(f"  closed-loop planning, {pl['episodes']} held-out episodes (seed {pl['seed']}), "
                         f"{pl['settings']}:")
            for method, r in pl["methods"].items():
                lines.append(f"    {method:9s} success {r['success_rate']:.0%}, mean final distance "
                             f"{r['mean_final_distance']:.2f}, {r['seconds_per_episode']:.1f} s / episode")
    if "planning" in page:
        lines.append(f"this demo's {len(page['planning']['methods']['learned']['final_distances'])} rendered "
                     "episodes: " + ", ".join(f"{m} {s['success_rate']:.0%}"
                                              for m, s in page["planning"]["methods"].items()))
    return lines


def planning_what(results: dict[str, Any]) -> str:
    """What a planning episode's video shows, its rows named in the video's own order."""
    rows = "; ".join(f"{r} — {METHOD_LABELS.get(r, r)}" for r in results.get("video_rows") or results["methods"])
    return ("One closed-loop episode of \"push the object to the ring\" under each method, on the same start and "
            f"goal. Rows, top to bottom: {rows}. The first panel of a row is the episode as it runs (the ring is the "
            "goal, d the pushed object's distance to it; 'reached' or 'missed' says whether it ended within the "
            "success radius); the 'plan +k' panels are the frame k steps ahead that the plan being executed "
            "expects — the shipped model's own prediction for the learned planner, the simulator's for the "
            "true-simulator planner (random actions make no plan).")


PAGE_WHAT = {
    "action_free": ("Four held-out test sequences (two context frames given, green): the truth (grey), then the "
                    "shipped action-free model's best of 16 sampled futures and two other samples (red). The best "
                    "is chosen by PSNR against the truth, so it shows the best the model can produce, not a "
                    "prediction it could pick on its own; the other two are unselected samples of the same model. "
                    "The future is uncertain here (the actions are not given), so samples may differ from the truth "
                    "and from each other."),
    "actions": ("The same four test sequences for the shipped action-conditioned model: the truth, then three "
                "predictions from the same two context frames and the same latent noise that differ only in the "
                "actions given — the true ones, the true ones mirrored, and none (the gripper held still). Only "
                "the first should match the truth; the others show that the model follows the actions, objects "
                "included."),
}


def run_demo(minutes: float = 4.0, out_dir: str = "runs/demo", episodes: int = 2,
             overrides: tuple[str, ...] = ()) -> Path:
    start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = Path(out_dir)
    run_dir = train_from_scratch(root / "train", minutes, overrides)
    model, cfg, payload = load_model(run_dir, device)
    extra = video_metrics_for(cfg.data.name)
    eval_dir = new_folder(run_dir / "eval", f"demo-{SAMPLES}samples-16seq")     # never over an earlier one
    own = evaluate_video(model, build_data(cfg, "test"), n_samples=SAMPLES, n_sequences=16, device=device,
                         metrics=extra, out_dir=eval_dir).summary()
    own["steps"] = payload["step"]
    atomic_write_text(eval_dir / "eval.json", json.dumps({
        "command": "seqvae demo (the from-scratch run's test split)", "step": payload["step"], "split": "test",
        "settings": {"sequences": 16, "samples": SAMPLES, "context_frames": model.n_past,
                     "predicted_frames": model.n_eval}, "results": own}, indent=2) + "\n")
    page: dict[str, Any] = {"run": run_dir, "own": own, "cards": {}}
    shipped = pretrained.available()
    shown: list[Section] = []
    if ACTION_FREE in shipped:
        print("[2/4] predictions of the shipped models ...")
        free, free_cfg = pretrained.load(ACTION_FREE, device)
        video = action_free_video(free, free_cfg, root / "predictions_action_free.mp4", device)
        shown.append(Section("2. Shipped action-free model: truth | best of 16 | two other samples",
                             PAGE_WHAT["action_free"], figures=[Figure(video)]))
    if ACTIONS in shipped:
        acts, acts_cfg = pretrained.load(ACTIONS, device)
        video = action_video(acts, acts_cfg, root / "predictions_actions.mp4", device)
        shown.append(Section("2. Shipped action-conditioned model: truth | true actions | mirrored actions | "
                             "gripper held still", PAGE_WHAT["actions"], figures=[Figure(video)]))
        print(f"[3/4] {episodes} closed-loop planning episodes with the shipped action-conditioned model ...")
        results = planning_episodes(acts, acts_cfg, root / "planning", episodes)
        page["planning"] = results
        shown += [Section(f"3. Planning episode {i}: push the object to the ring", planning_what(results),
                          figures=[Figure(root / "planning" / f"episode_{i:03d}.mp4")]) for i in range(episodes)]
    if not shipped:
        print("[2/4] [3/4] no shipped pretrained models in this copy (seqvae/pretrained/manifest.json): skipped")
    page["cards"] = {name: card_figures(name) for name in (ACTION_FREE, ACTIONS) if name in shipped}
    print("[4/4] figures")
    lines = figure_lines(page)
    print("\n".join(lines))
    own_sections = run_sections(run_dir, root / "report")
    config = own_sections.pop()                                      # the run's config goes last
    for section in own_sections:
        section.heading = f"1. Training from scratch: {section.heading[0].lower()}{section.heading[1:]}"
    own_sections[0].heading += f" — {own['steps']} steps in {minutes:g} min on this machine"
    config.heading = "The from-scratch run's configuration"
    figures = Section("4. Figures", "This run's figures (best of 16 against copy-last-frame on 16 test sequences), "
                                    "then the shipped models' held-out figures from their model cards "
                                    "(seqvae/pretrained/*.md), then this demo's planning episodes.", lines=lines)
    index = write_page(root / "index.html", "seqvae demo: the embedded pushing world",
                       [*own_sections, *shown, figures, config],
                       intro=f"What `seqvae demo` made in {root}: SVG-LP with the optimal-σ decoder trained from "
                             "scratch on the embedded pushing videos (1), the shipped models' predictions (2), "
                             "closed-loop planning with the shipped action-conditioned model (3) and the figures (4). "
                             f"The from-scratch run's own page is {run_dir / 'index.html'}.")
    atomic_write_text(root / "figures.json", json.dumps({k: page[k] for k in ("own", "cards")}, indent=2,
                                                        default=str) + "\n")
    print(f"\nopen {index} (videos, training curves, figures); demo took {(time.perf_counter() - start) / 60:.1f} min")
    return index


def run(args: argparse.Namespace) -> None:
    run_demo(minutes=args.minutes, out_dir=args.out_dir, episodes=args.episodes, overrides=tuple(args.overrides))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="train from scratch, predict and plan with the shipped models, write index.html")
    p.add_argument("--minutes", type=float, default=4.0, help="from-scratch training time")
    p.add_argument("--episodes", type=int, default=2, help="closed-loop planning episodes to render")
    p.add_argument("--out-dir", default="runs/demo", help="demo folder (a trained run inside is reused)")
    p.add_argument("overrides", nargs="*", help=f"key=value overrides of {DEMO_CONFIG}")
    p.set_defaults(func=run)
