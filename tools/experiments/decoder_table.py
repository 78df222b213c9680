"""Every calibrated decoder on one model and data set: the paper's Table 2 (§5.1, §5.3–5.4).

For each likelihood head (default: every registered one; ``--heads`` picks and configures,
e.g. ``--heads optimal_sigma,beta_vae:beta=0.01,categorical``) the tool trains (or reuses)
a run of the base config with that head, evaluates the test-split −log p bound, and
reports, per row, whether the bound is of the **8-bit data** (discrete heads: categorical,
bitwise, logistic mixture, discretized Gaussian/logistic) or a **density** on [0, 1]
(continuous heads) — the two are not on one scale (paper Table 4) — and whether it is a
valid bound at all: the per-image optimal σ estimates σ from the image it scores and the
Bernoulli is not a normalized likelihood of gray levels, so the paper reports no −log p
for them. FID of prior samples is added when Inception weights exist. Outputs::

    OUT/runs/<head>/   OUT/table.md   OUT/results.json   OUT/neg_log_p.png

Tiny CPU run::

    python tools/experiments/decoder_table.py --out runs/exp/decoders

Paper scale (SVHN VAE column of Table 2, GPU)::

    python tools/experiments/decoder_table.py --config configs/svhn/conv_vae_optimal_sigma.yaml \\
        --out runs/svhn/decoders --fid-samples 10000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.experiments import common  # noqa: E402
from tools.experiments.common import ExperimentError, Variant  # noqa: E402

# The β-VAE row of Table 2 is a tuned β; 0.01 is the best hand-tuned β on SVHN (Table 1).
DEFAULT_BETA = 0.01
INVALID_REASON = {
    "per_image_sigma": "per-image σ is estimated from the very image it scores",
    "bernoulli": "Bernoulli treats intensities as probabilities: not a likelihood of the images",
}


def default_heads(beta: float) -> list[str]:
    """Every registered head; the β-VAE with ``beta=<beta>``."""
    from seqvae.registry import LIKELIHOODS

    return [f"beta_vae:beta={beta:g}" if n == "beta_vae" else n for n in LIKELIHOODS.names()]


def head_variants(specs: list[str]) -> list[Variant]:
    """Variants from head specs ``name[:key=value,...]``; names checked against the registry."""
    from seqvae.registry import LIKELIHOODS

    variants, seen = [], set()
    for spec in specs:
        name, fields = common.parse_variant_spec(spec)
        if name not in LIKELIHOODS.names():
            raise ExperimentError(f"unknown head {name!r} in --heads; known: {', '.join(LIKELIHOODS.names())}")
        folder = common.safe_name(name + "".join(f"-{k}={v}" for k, v in fields.items()))
        if folder in seen:
            raise ExperimentError(f"head {spec!r} is listed twice")
        seen.add(folder)
        label = name + (" (" + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")" if fields else "")
        variants.append(Variant(folder, {"name": name, **fields}, label, fields.get("beta")))
    return variants


def bound_kind(row: dict[str, Any]) -> str:
    """What a row's −log p is of: the 8-bit data, a density on [0, 1], or neither (Bernoulli)."""
    if row["head"] == "bernoulli":
        return "neither (pseudo-likelihood)"
    return "8-bit data" if row["discrete"] else "density"


def build_parser() -> argparse.ArgumentParser:
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--heads", default="",
                        help="comma-separated heads, each name[:key=value;...] with ';' between a head's fields, "
                             "e.g. 'optimal_sigma,beta_vae:beta=0.01,student_t' (default: every registered head)")
    parser.add_argument("--beta", type=float, default=DEFAULT_BETA,
                        help=f"β of the beta_vae row when --heads is not given (default {DEFAULT_BETA})")
    return parser


def split_heads(text: str) -> list[str]:
    """``'a,b:k=1;m=2'`` → ``['a', 'b:k=1,m=2']`` (';' separates one head's fields)."""
    return [h.strip().replace(";", ",") for h in text.split(",") if h.strip()]


def plot_bounds(rows: list[dict[str, Any]], path: Path) -> Path:
    """Horizontal bars of the −log p bound, density heads and 8-bit heads in separate panels."""
    groups = [("density on [0, 1] (continuous heads)", [r for r in rows if not r["discrete"]]),
              ("8-bit data (discrete heads)", [r for r in rows if r["discrete"]])]
    groups = [g for g in groups if g[1]]
    heights = [len(group) for _, group in groups]
    fig, axes = common.new_figure(len(groups), 1, figsize=(6.5, 0.45 * sum(heights) + 1.2 * len(groups)),
                                  squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, (title, group) in zip(axes[:, 0], groups):
        names = [r["variant"] for r in group]
        values = [r["neg_elbo"] for r in group]
        colors = ["tab:gray" if not r["valid_bound"] else ("tab:orange" if r["discrete"] else "tab:blue")
                  for r in group]
        ax.barh(range(len(group)), values, color=colors)
        ax.set_yticks(range(len(group)))
        ax.set_yticklabels([n + ("  (not a bound)" if not r["valid_bound"] else "") for n, r in zip(names, group)],
                           fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0.0, color="black", linewidth=0.6)
        ax.set_title(f"−log p bound, {title}", fontsize=9)
        ax.set_xlabel("nats per image (test)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    return common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    """Train/evaluate every head; write table.md, results.json and neg_log_p.png under ``--out``."""
    args = build_parser().parse_intermixed_args(argv)  # overrides may sit between options
    variants = head_variants(split_heads(args.heads) if args.heads else default_heads(args.beta))
    base = common.base_raw_config(args)
    device = common.default_device(args.device)
    weights, fid_note = common.fid_weights(args.inception_weights)

    configs = [common.variant_config(base, v, args.out, args.overrides) for v in variants]  # all checked first
    rows = []
    for v, cfg in zip(variants, configs):
        print(f"== {v.name}")
        run_dir, status = common.ensure_trained(cfg, progress=not args.quiet)
        print(f"   {status}: {run_dir}")
        result, model, run_cfg = common.evaluate_run(run_dir, device, args.eval_batches)
        fid = None
        if weights is not None:
            from seqvae.build import build_data
            from seqvae.evaluation.images import sample_fid

            fid = sample_fid(model, build_data(run_cfg, "test"), args.fid_samples, weights, device)
        valid = bool(result["valid_bound"])
        rows.append({"variant": v.name, "head": v.likelihood["name"], "label": v.label,
                     "neg_elbo": result["neg_elbo"], "bpd": result["bpd"], "nll": result["nll"], "kl": result["kl"],
                     "discrete": result["discrete"], "valid_bound": valid,
                     "note": "" if valid else INVALID_REASON.get(v.likelihood["name"],
                                                                 "the head reports no valid bound"),
                     "sigma": result.get("sigma_ema", result.get("sigma")), "beta_eff": result.get("beta_eff"),
                     "fid": fid, "step": result["step"], "examples": result["examples"], "status": status,
                     "run_dir": str(run_dir)})

    header = ["head", "−log p (nats)", "bits/dim", "bound of", "valid bound", "FID", "note"]
    table = common.markdown_table(header, [
        [r["variant"], common.fmt(r["neg_elbo"], ".2f"), common.fmt(r["bpd"], ".4f"),
         bound_kind(r), "yes" if r["valid_bound"] else "no",
         common.fmt(r["fid"], ".2f"), r["note"]] for r in rows])
    notes = [f"Test-split bound from {rows[0]['examples']} examples after {rows[0]['step']} training steps per head.",
             "'8-bit data' rows bound −log P of the discrete pixel values; 'density' rows bound a continuous "
             "density on [0, 1] — the two are not on one scale (paper Table 4).",
             "Rows with 'valid bound: no' are not bounds on −log p; the paper reports only FID for them."]
    if fid_note:
        notes.append(fid_note)
    plot_bounds(rows, Path(args.out) / "neg_log_p.png")
    common.write_outputs(args.out, "Calibrated decoders (paper Table 2)", table, notes,
                         {"tool": "decoder_table", "config": args.config or "built-in tiny config",
                          "overrides": args.overrides, "fid_note": fid_note, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(common.cli(main))
