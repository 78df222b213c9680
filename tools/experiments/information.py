"""Mutual information and marginal KL of β-VAEs and σ-VAEs: the paper's Fig. 4 (§5.2).

The rate splits as (Eq. 6) ``E_x KL(q(z|x) ‖ p(z)) = I(x; z) + KL(m(z) ‖ p(z))`` with
m(z) the aggregate posterior. For each run of a β sweep the tool collects the encoder's
posteriors on the test split and estimates the three terms with
:func:`seqvae.evaluation.latents.analyze_latents` (exact rate; marginal KL by Monte Carlo as
in Rosca et al. 2018; MI = rate − marginal KL, with standard errors). Lower β should raise
MI and, past some point, the marginal KL (poor prior samples); the σ-VAE, placed at its
learned effective β = 2σ², should sit near that inflection point.

Runs: ``--runs DIR`` reuses a folder of runs (e.g. ``beta_sweep``'s ``OUT/runs``): every
sub-folder with a checkpoint of a ``beta_vae`` head (β set) or of a learned-σ Gaussian
head (β = its effective β) is analysed. Without ``--runs`` the β-sweep variants are
trained (or reused) in ``OUT/runs`` exactly as ``beta_sweep.py`` does. Outputs::

    OUT/table.md   OUT/results.json   OUT/information_vs_beta.png

Tiny CPU run (reusing a tiny β sweep)::

    python tools/experiments/beta_sweep.py --out runs/exp/beta_sweep
    python tools/experiments/information.py --runs runs/exp/beta_sweep/runs --out runs/exp/information

Paper scale: run ``beta_sweep.py`` with the SVHN config, then ``information.py --runs`` on
its runs folder (posteriors of up to ``--max-examples`` test images; MI can be at most log N).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from tools.experiments import beta_sweep, common  # noqa: E402
from tools.experiments.common import ExperimentError  # noqa: E402

LEARNED_SIGMA_HEADS = ("shared_sigma", "optimal_sigma", "per_image_sigma", "per_pixel_sigma")


def build_parser() -> argparse.ArgumentParser:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="",
                        help="folder of existing runs to analyse (e.g. beta_sweep's OUT/runs); default: train the "
                             "β-sweep variants into OUT/runs")
    parser.add_argument("--betas", type=common.parse_floats, default=common.parse_floats(beta_sweep.DEFAULT_BETAS),
                        help=f"β values when training (default {beta_sweep.DEFAULT_BETAS})")
    parser.add_argument("--sigma-heads", default=beta_sweep.DEFAULT_SIGMA_HEADS,
                        help=f"learned-σ heads when training (default {beta_sweep.DEFAULT_SIGMA_HEADS})")
    parser.add_argument("--max-examples", type=int, default=10000,
                        help="posteriors of at most this many test images (0: all)")
    parser.add_argument("--mc-samples", type=int, default=10000, help="Monte Carlo samples z ~ m(z) per run")
    parser.add_argument("--mc-seed", type=int, default=0, help="seed of the Monte Carlo samples")
    return parser


def discover_runs(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` holding a ``checkpoint.pt``, sorted by name."""
    if not folder.is_dir():
        raise ExperimentError(f"--runs {folder} is not a folder")
    runs = sorted(p for p in folder.iterdir() if (p / "checkpoint.pt").is_file())
    if not runs:
        raise ExperimentError(f"--runs {folder} holds no run folders with a checkpoint.pt")
    return runs


def analyse_run(run_dir: Path, args: argparse.Namespace, device: torch.device) -> dict[str, Any] | str:
    """One row (rate, MI, marginal KL …) for ``run_dir``, or a string saying why it was skipped."""
    from seqvae.build import build_data
    from seqvae.evaluation.images import split_posteriors
    from seqvae.evaluation.latents import analyze_latents
    from seqvae.models.base import SingleLatentVAE

    result, model, cfg = common.evaluate_run(run_dir, device, args.eval_batches)
    head = cfg.likelihood.name
    if head == "beta_vae":
        beta, learned = float(cfg.likelihood.beta), False
    elif head in LEARNED_SIGMA_HEADS and result.get("beta_eff") is not None:
        beta, learned = float(result["beta_eff"]), True
    else:
        return f"{run_dir.name}: head {head!r} has no β (neither beta_vae nor a learned-σ Gaussian); skipped"
    if not isinstance(model, SingleLatentVAE):
        return f"{run_dir.name}: model {cfg.model.name!r} has no single Gaussian latent; skipped"
    mu, logvar = split_posteriors(model, build_data(cfg, "test"), args.max_examples, cfg.train.batch_size, device)
    stats = analyze_latents(mu, logvar, num_samples=args.mc_samples,
                            generator=torch.Generator().manual_seed(args.mc_seed))
    return {"variant": run_dir.name, "head": head, "beta": beta, "beta_learned": learned,
            **stats.as_dict(), "test_kl": result["kl"], "neg_elbo": result["neg_elbo"],
            "eval_examples": result["examples"], "step": result["step"], "run_dir": str(run_dir)}


def plot_information(rows: list[dict[str, Any]], path: Path) -> Path:
    """Fig. 4: MI and marginal KL vs β (log axis); σ-VAE points at their effective β."""
    fig, axes = common.new_figure(1, 2, figsize=(10, 3.8))
    sweep = sorted((r for r in rows if not r["beta_learned"]), key=lambda r: r["beta"])
    learned = [r for r in rows if r["beta_learned"]]
    for ax, key, title in ((axes[0], "mi", "mutual information I(x; z)"),
                           (axes[1], "marginal_kl", "marginal KL  KL(m(z) ‖ p(z))")):
        if sweep:
            ax.errorbar([r["beta"] for r in sweep], [r[key] for r in sweep], yerr=[r[f"{key}_se"] for r in sweep],
                        fmt="o-", color="tab:blue", capsize=3, label="β-VAE")
        markers = iter(["*", "D", "s", "^", "v"])
        for r in learned:
            ax.errorbar([r["beta"]], [r[key]], yerr=[r[f"{key}_se"]], fmt=next(markers, "*"), markersize=12,
                        capsize=3, label=f"{r['variant']} (β_eff = {r['beta']:.3g})")
        if key == "mi" and rows:
            cap = math.log(rows[0]["num_data"])
            ax.axhline(cap, color="gray", linestyle=":", linewidth=1, label=f"log N = {cap:.2f} (estimator cap)")
        ax.set_xscale("log")
        ax.set_xlabel("β  (σ-VAE: effective β = 2σ²)")
        ax.set_ylabel("nats")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Fig. 4: information in the latents vs β (test split)", fontsize=10)
    return common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    """Analyse (and, without ``--runs``, first train) the sweep; write table.md, results.json, the plot."""
    args = build_parser().parse_intermixed_args(argv)  # overrides may sit between options
    if args.runs:
        run_dirs = discover_runs(Path(args.runs))
    else:
        variants = beta_sweep.sweep_variants(args.betas, [h.strip() for h in args.sigma_heads.split(",") if h.strip()])
        run_dirs = [run_dir for _, run_dir, _ in beta_sweep.run_sweep(args, variants)]
    device = common.default_device(args.device)
    rows, skipped = [], []
    for run_dir in run_dirs:
        print(f"== analysing {run_dir}")
        row = analyse_run(Path(run_dir), args, device)
        (skipped if isinstance(row, str) else rows).append(row)
    if not rows:
        raise ExperimentError("no run had a β to place on the plot: " + "; ".join(skipped))
    rows.sort(key=lambda r: (r["beta_learned"], -r["beta"]))

    header = ["variant", "β", "rate (nats)", "MI (nats)", "marginal KL (nats)", "MI direct (nats)"]
    table = common.markdown_table(header, [
        [r["variant"], common.fmt(r["beta"], ".3g") + (" (learned 2σ²)" if r["beta_learned"] else ""),
         f"{r['rate']:.3f} ± {r['rate_se']:.3f}", f"{r['mi']:.3f} ± {r['mi_se']:.3f}",
         f"{r['marginal_kl']:.3f} ± {r['marginal_kl_se']:.3f}", f"{r['mi_direct']:.3f} ± {r['mi_direct_se']:.3f}"]
        for r in rows])
    n = rows[0]["num_data"]
    notes = [f"Posteriors of {n} test images, {rows[0]['num_samples']} Monte Carlo samples of z ~ m(z) per run; "
             "rate = MI + marginal KL (Eq. 6). ± are standard errors: over the N images for the "
             "rate, Monte Carlo for the marginal KL and MI direct, both combined for MI.",
             f"m(z) is the mixture over these N = {n} posteriors, so MI estimates cannot exceed log N = "
             f"{math.log(n):.2f} nats and saturate near it for sharp encoders; compare runs at equal N."]
    notes += [f"skipped {s}" for s in skipped]
    plot_information(rows, Path(args.out) / "information_vs_beta.png")
    common.write_outputs(args.out, "Mutual information and marginal KL vs β (paper Fig. 4)", table, notes,
                         {"tool": "information", "runs": args.runs or str(Path(args.out) / "runs"),
                          "rows": rows, "skipped": skipped})
    return 0


if __name__ == "__main__":
    sys.exit(common.cli(main))
