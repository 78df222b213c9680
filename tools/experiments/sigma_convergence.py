"""How fast the decoder σ settles: the paper's Fig. 9 (App. A, §5.4).

Trains three runs of one base config, logging every ``--log-every`` steps:

* ``shared_sigma``  — σ is a parameter learned by gradient descent (a slow start: it has
  to travel from its initial value to the region of the optimum);
* ``optimal_sigma`` — σ*² = batch MSE, analytic at every step (its batch value ``sigma``)
  with the EMA ``sigma_ema`` used at evaluation (App. C);
* ``beta_vae``      — a constant σ = √(β/2), for ``--beta`` (``auto``: the optimal-σ
  run's final effective β, rounded to 3 significant digits).

and plots σ over training steps from each run's ``metrics.jsonl`` (and the training
−ELBO beside it). The table gives each run's final σ and effective β, the first logged
step after which σ stays within ``--tol`` of its final value, and the test bound.
Outputs::

    OUT/runs/<variant>/   OUT/table.md   OUT/results.json   OUT/sigma_convergence.png

Tiny CPU run::

    python tools/experiments/sigma_convergence.py --out runs/exp/sigma

Paper scale (SVHN, GPU)::

    python tools/experiments/sigma_convergence.py --config configs/svhn/conv_vae_optimal_sigma.yaml \\
        --out runs/svhn/sigma --beta auto --log-every 10
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.experiments import common  # noqa: E402
from tools.experiments.common import ExperimentError, Variant  # noqa: E402


def parse_beta(text: str) -> float | str:
    """``--beta``: a positive number or ``auto``."""
    if text == "auto":
        return text
    values = common.parse_floats(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"--beta takes one number or 'auto', got {text!r}")
    return values[0]


def build_parser() -> argparse.ArgumentParser:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--beta", type=parse_beta, default=0.01,
                        help="β of the β-VAE run, or 'auto' for the optimal-σ run's final effective β (default 0.01)")
    parser.add_argument("--log-every", type=int, default=None,
                        help="steps between logged σ values (default: steps / 100, at least 1)")
    parser.add_argument("--tol", type=float, default=0.1,
                        help="relative band around the final σ that counts as converged (default 0.1)")
    return parser


def sigma_series(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{"sigma": [(step, σ)], "sigma_ema": [...], "neg_elbo": [...]}`` from the run's train lines."""
    out: dict[str, list[tuple[int, float]]] = {"sigma": [], "sigma_ema": [], "neg_elbo": []}
    for m in common.read_metrics(run_dir):
        if m.get("split") != "train":
            continue
        for key in out:
            if key in m and m[key] is not None:
                out[key].append((int(m["step"]), float(m[key])))
    return out


def steps_to_converge(series: list[tuple[int, float]], tol: float) -> int | None:
    """First logged step from which σ stays within ``tol`` (relative) of its final value."""
    if not series:
        return None
    final = series[-1][1]
    first = series[-1][0]
    for step, value in reversed(series):
        if abs(value - final) > tol * abs(final):
            break
        first = step
    return first


def plot_sigma(curves: list[dict[str, Any]], path: Path) -> Path:
    """Fig. 9: σ vs training step (log y); right panel: training −ELBO."""
    fig, (ax, ax2) = common.new_figure(1, 2, figsize=(11, 3.8))
    colors = {"shared_sigma": "tab:green", "optimal_sigma": "tab:red", "beta_vae": "tab:blue"}
    for c in curves:
        color = colors.get(c["head"], None)
        steps, values = zip(*c["sigma"]) if c["sigma"] else ((), ())
        if c["head"] == "beta_vae":
            ax.axhline(c["sigma_constant"], color=color, linestyle="--",
                       label=f"β-VAE β={c['beta']:.3g}: σ = √(β/2) = {c['sigma_constant']:.3g}")
        elif c["head"] == "optimal_sigma":
            ax.plot(steps, values, color=color, alpha=0.45, linewidth=1, label="optimal σ (batch σ*)")
            if c["sigma_ema"]:
                s2, v2 = zip(*c["sigma_ema"])
                ax.plot(s2, v2, color=color, linewidth=2, label="optimal σ (EMA, used at evaluation)")
        else:
            ax.plot(steps, values, color=color, linewidth=2, label="shared σ (learned by gradient descent)")
        if c["neg_elbo"]:
            s3, v3 = zip(*c["neg_elbo"])
            ax2.plot(s3, v3, color=color, label=c["variant"])
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("decoder σ")
    ax.set_title("Fig. 9: variance convergence", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax2.set_yscale("symlog", linthresh=10.0)  # −ELBO spans signs and decades
    ax2.set_xlabel("training step")
    ax2.set_ylabel("training −ELBO (nats, batch)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    return common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    """Train the three runs; write table.md, results.json and sigma_convergence.png under ``--out``."""
    args = build_parser().parse_intermixed_args(argv)  # overrides may sit between options
    base = common.base_raw_config(args)
    steps = int(base["train"].get("steps", 1))
    log_every = args.log_every or max(1, steps // 100)
    train_overrides = {"log_every": log_every}

    def run(variant: Variant) -> tuple[Path, str]:
        cfg = common.variant_config(base, variant, args.out, args.overrides, train_overrides)
        print(f"== {variant.name}")
        run_dir, status = common.ensure_trained(cfg, progress=not args.quiet)
        print(f"   {status}: {run_dir}")
        return run_dir, status

    done = []
    for variant in (Variant("shared_sigma", {"name": "shared_sigma"}, "shared σ-VAE"),
                    Variant("optimal_sigma", {"name": "optimal_sigma"}, "optimal σ-VAE")):
        done.append((variant, *run(variant)))
    beta = args.beta
    if beta == "auto":
        ema = sigma_series(done[-1][1])["sigma_ema"]
        if not ema:
            raise ExperimentError(f"--beta auto: {done[-1][1]} logged no sigma_ema")
        beta = float(f"{2 * ema[-1][1] ** 2:.3g}")
        print(f"--beta auto: the optimal-σ run ended at effective β = 2σ² ≈ {beta:g}")
    bvae = Variant(common.safe_name(f"beta_{beta:g}"), {"name": "beta_vae", "beta": beta}, f"β-VAE β={beta:g}", beta)
    done.append((bvae, *run(bvae)))

    device = common.default_device(args.device)
    rows, curves = [], []
    for v, run_dir, status in done:
        result, _, _ = common.evaluate_run(run_dir, device, args.eval_batches)
        series = sigma_series(run_dir)
        # optimal σ: σ that trains (the batch σ*) for convergence; its EMA is what evaluation uses
        track = series["sigma"]
        final_sigma = result.get("sigma_ema", result.get("sigma")) if v.beta is None else math.sqrt(v.beta / 2)
        curve = {"variant": v.name, "head": v.likelihood["name"], "beta": v.beta, **series,
                 "sigma_constant": math.sqrt(v.beta / 2) if v.beta is not None else None}
        curves.append(curve)
        rows.append({"variant": v.name, "head": v.likelihood["name"], "final_sigma": final_sigma,
                     "beta_eff": 2 * final_sigma**2, "steps_to_converge": steps_to_converge(track, args.tol),
                     "first_logged_sigma": track[0][1] if track else None,
                     "neg_elbo": result["neg_elbo"], "bpd": result["bpd"], "step": result["step"],
                     "log_points": len(track), "status": status, "run_dir": str(run_dir)})

    header = ["variant", "final σ", "effective β = 2σ²", f"steps to within {args.tol:.0%} of final σ",
              "−log p (nats)", "bits/dim"]
    table = common.markdown_table(header, [
        [r["variant"], common.fmt(r["final_sigma"], ".4g"), common.fmt(r["beta_eff"], ".4g"),
         common.fmt(r["steps_to_converge"], "d"), common.fmt(r["neg_elbo"], ".2f"), common.fmt(r["bpd"], ".4f")]
        for r in rows])
    notes = [f"σ logged every {log_every} steps over {rows[0]['step']} steps; final σ of optimal σ is its EMA (used at "
             "evaluation), its convergence step is measured on the batch σ* it trains with; β-VAE σ is constant.",
             "Test-split bound as in the other tables."]
    plot_sigma(curves, Path(args.out) / "sigma_convergence.png")
    common.write_outputs(args.out, "Decoder σ over training (paper Fig. 9)", table, notes,
                         {"tool": "sigma_convergence", "config": args.config or "built-in tiny config",
                          "overrides": args.overrides, "beta": beta, "log_every": log_every,
                          "rows": rows, "curves": curves})
    return 0


if __name__ == "__main__":
    sys.exit(common.cli(main))
