"""β-VAE sweep against the σ-VAE: the paper's Table 1 and Fig. 3 (§5.1).

A β-VAE is a Gaussian decoder with the constant σ = √(β/2) (§3.1); its −log p bound is
reported with that σ. The σ-VAE variants learn σ (``shared_sigma``: a learned log σ;
``optimal_sigma``: σ*² = batch MSE with an EMA at evaluation) and their row's β is the
learned *effective* β = 2σ². For each variant the tool trains (or reuses) a run, evaluates
the test-split bound, FID of prior samples when Inception weights exist, and writes::

    OUT/runs/<variant>/     the runs (beta_10, beta_1, …, shared_sigma, optimal_sigma)
    OUT/table.md            β | −log p (nats) | bits/dim | FID          (Table 1)
    OUT/results.json        every number of the table, plus NLL, KL, σ
    OUT/samples.png         one row of prior samples per variant        (Fig. 3)
    OUT/neg_log_p_vs_beta.png   −log p vs β, σ-VAE points at their effective β

Tiny CPU run (minutes)::

    python tools/experiments/beta_sweep.py --out runs/exp/beta_sweep

Paper scale (SVHN, GPU; App. B: 10 epochs ≈ 5.7k steps at batch 128)::

    python tools/experiments/beta_sweep.py --config configs/svhn/conv_vae_optimal_sigma.yaml \\
        --out runs/svhn/beta_sweep --betas 10,1,0.1,0.01,0.001,0.0001 --fid-samples 10000
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from tools.experiments import common  # noqa: E402
from tools.experiments.common import Variant  # noqa: E402

DEFAULT_BETAS = "10,1,0.1,0.01,0.001,0.0001"
DEFAULT_SIGMA_HEADS = "shared_sigma,optimal_sigma"
SIGMA_LABELS = {"shared_sigma": "shared σ-VAE", "optimal_sigma": "optimal σ-VAE", "per_image_sigma": "per-image σ-VAE"}
SAMPLES_PER_ROW = 8


def beta_variant_name(beta: float) -> str:
    """Run-folder name of the β-VAE with this β, e.g. ``beta_0.01``, ``beta_1e-04``."""
    return common.safe_name(f"beta_{beta:g}")


def sweep_variants(betas: Sequence[float], sigma_heads: Sequence[str]) -> list[Variant]:
    """β-VAE variants (largest β first, as in Table 1) followed by the σ-VAE variants."""
    out = [Variant(beta_variant_name(b), {"name": "beta_vae", "beta": float(b)}, f"β-VAE β={b:g}", float(b))
           for b in sorted(set(betas), reverse=True)]
    out += [Variant(h, {"name": h}, SIGMA_LABELS.get(h, h)) for h in sigma_heads]
    return out


def row_beta(variant: Variant, result: dict[str, Any]) -> float | None:
    """The β of a row: the set β of a β-VAE, the learned effective β = 2σ² of a σ-VAE."""
    return variant.beta if variant.beta is not None else result.get("beta_eff")


def build_parser() -> argparse.ArgumentParser:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--betas", type=common.parse_floats, default=common.parse_floats(DEFAULT_BETAS),
                        help=f"comma-separated β values of the β-VAE runs (default {DEFAULT_BETAS})")
    parser.add_argument("--sigma-heads", default=DEFAULT_SIGMA_HEADS,
                        help=f"comma-separated learned-σ heads to compare (default {DEFAULT_SIGMA_HEADS})")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the prior samples in samples.png")
    return parser


def run_sweep(args: argparse.Namespace, variants: list[Variant]) -> list[tuple[Variant, Path, str]]:
    """Train (or reuse) every variant; ``[(variant, run_dir, status)]``."""
    base = common.base_raw_config(args)
    configs = [common.variant_config(base, v, args.out, args.overrides) for v in variants]  # all checked first
    done = []
    for v, cfg in zip(variants, configs):
        print(f"== {v.name}: {cfg.likelihood}")
        run_dir, status = common.ensure_trained(cfg, progress=not args.quiet)
        print(f"   {status}: {run_dir}")
        done.append((v, run_dir, status))
    return done


def plot_samples(rows: list[tuple[str, torch.Tensor]], path: Path) -> Path:
    """Fig. 3: one labelled row of prior samples ``[n, C, H, W]`` per variant."""
    from torchvision.utils import make_grid

    fig, axes = common.new_figure(len(rows), 1, figsize=(1.0 * SAMPLES_PER_ROW + 1.5, 1.05 * len(rows) + 0.3),
                                  squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], rows):
        grid = make_grid(images, nrow=images.shape[0], padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    axes[0, 0].set_title("Prior samples per variant (Fig. 3)", fontsize=10)
    return common.save_figure(fig, path)


def plot_neg_log_p(rows: list[dict[str, Any]], path: Path) -> Path:
    """−log p bound vs β (log axis): the β-VAE curve, σ-VAE points at their effective β."""
    fig, ax = common.new_figure(figsize=(5.5, 3.8))
    betas = [(r["beta"], r["neg_elbo"]) for r in rows if r["kind"] == "beta_vae"]
    if betas:
        xs, ys = zip(*sorted(betas))
        ax.plot(xs, ys, "o-", color="tab:blue", label="β-VAE (σ = √(β/2))")
    markers = iter(["*", "D", "s", "^", "v"])
    for r in rows:
        if r["kind"] != "beta_vae" and r["beta"] is not None and math.isfinite(r["beta"]):
            ax.plot([r["beta"]], [r["neg_elbo"]], linestyle="none", marker=next(markers, "*"), markersize=12,
                    label=f"{r['label']} (β_eff = {r['beta']:.3g})")
    ax.set_xscale("log")
    # symlog: small β blows the bound up by orders of magnitude, and good bounds may be negative
    span = max((abs(r["neg_elbo"]) for r in rows), default=1.0)
    ax.set_yscale("symlog", linthresh=max(1.0, 1e-3 * span))
    ax.set_xlabel("β  (σ-VAE: effective β = 2σ²)")
    ax.set_ylabel("−log p bound (nats, test; symlog)")
    ax.set_title("Table 1: −log p vs β")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; write table.md, results.json, samples.png and neg_log_p_vs_beta.png under ``--out``."""
    args = build_parser().parse_intermixed_args(argv)  # overrides may sit between options
    variants = sweep_variants(args.betas, [h.strip() for h in args.sigma_heads.split(",") if h.strip()])
    done = run_sweep(args, variants)

    device = common.default_device(args.device)
    weights, fid_note = common.fid_weights(args.inception_weights)
    rows, sample_rows = [], []
    for v, run_dir, status in done:
        result, model, cfg = common.evaluate_run(run_dir, device, args.eval_batches)
        fid = None
        if weights is not None:
            from seqvae.build import build_data
            from seqvae.evaluation.images import sample_fid

            fid = sample_fid(model, build_data(cfg, "test"), args.fid_samples, weights, device)
        from seqvae.evaluation.images import prior_samples

        beta = row_beta(v, result)
        label = v.label if v.beta is not None else f"{v.label}\n(β_eff {beta:.3g})"
        sample_rows.append((label, prior_samples(model, SAMPLES_PER_ROW, args.sample_seed, device)))
        rows.append({"variant": v.name, "label": v.label, "kind": v.likelihood["name"], "beta": beta,
                     "beta_learned": v.beta is None, "neg_elbo": result["neg_elbo"], "bpd": result["bpd"],
                     "nll": result["nll"], "kl": result["kl"], "sigma": result.get("sigma_ema", result.get("sigma")),
                     "fid": fid, "step": result["step"], "examples": result["examples"], "status": status,
                     "run_dir": str(run_dir)})

    header = ["variant", "β", "−log p (nats)", "bits/dim", "FID"]
    table = common.markdown_table(header, [
        [r["variant"], common.fmt(r["beta"], ".3g") + (" (learned 2σ²)" if r["beta_learned"] else ""),
         common.fmt(r["neg_elbo"], ".2f"), common.fmt(r["bpd"], ".4f"), common.fmt(r["fid"], ".2f")]
        for r in rows])
    notes = [f"Test-split bound from {rows[0]['examples']} examples after {rows[0]['step']} training steps per run; "
             "β-VAE rows score the ELBO of the Gaussian with σ = √(β/2); σ-VAE rows give the learned effective "
             "β = 2σ² (optimal σ: its EMA)."]
    if fid_note:
        notes.append(fid_note)
    out = Path(args.out)
    plot_samples(sample_rows, out / "samples.png")
    plot_neg_log_p(rows, out / "neg_log_p_vs_beta.png")
    common.write_outputs(out, "β-VAE vs σ-VAE (paper Table 1)", table, notes,
                         {"tool": "beta_sweep", "config": args.config or "built-in tiny config",
                          "overrides": args.overrides, "fid_note": fid_note, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(common.cli(main))
