"""Does bf16 autocast train as well as fp32? Train the same config twice from the same
seed — fp32 and bf16 autocast — and compare their ELBO curves.

    python tools/bf16_elbo_parity.py --steps 600 --out runs/bf16_parity
    python tools/bf16_elbo_parity.py --config configs/bair/svg_lp_optimal_sigma.yaml --steps 2000 ...

Writes ``<out>/{fp32,bf16}/`` run folders (reused if already finished), ``<out>/parity.md``
(train −ELBO averaged over windows of steps, test −ELBO at each evaluation, wall time per
step) and ``<out>/parity.png``. Differences should be within the run-to-run noise, which
the table shows as a third run: fp32 with another seed.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from seqvae.config import RunConfig
from seqvae.training import train


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


def windows(lines: list[dict], split: str, width: int) -> dict[int, float]:
    """Mean −ELBO of the train log lines in consecutive windows of ``width`` steps."""
    out: dict[int, list[float]] = {}
    for line in lines:
        if line["split"] == split:
            out.setdefault((line["step"] - 1) // width, []).append(line["neg_elbo"])
    return {(k + 1) * width: sum(v) / len(v) for k, v in sorted(out.items())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo/svg.yaml")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--window", type=int, default=100, help="steps per averaging window of the train curve")
    parser.add_argument("--out", default="runs/bf16_parity")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    out = Path(args.out)
    variants = {"fp32": ["train.precision=fp32", "train.seed=0"], "bf16": ["train.precision=bf16", "train.seed=0"],
                "fp32_seed1": ["train.precision=fp32", "train.seed=1"]}
    seconds = {}
    for name, extra in variants.items():
        run_dir = out / name
        cfg = RunConfig.load(args.config, [f"train.out_dir={run_dir}", f"train.steps={args.steps}",
                                           "train.time_limit_minutes=0", f"train.eval_every={args.window}",
                                           "train.log_every=10", f"train.checkpoint_every={args.steps}",
                                           "train.image_every=0", *extra, *args.overrides])
        if not (run_dir / "checkpoint.pt").exists():
            start = time.perf_counter()
            train(cfg, progress=False)
            seconds[name] = (time.perf_counter() - start) / args.steps
    curves = {name: read_metrics(out / name) for name in variants}
    train_curves = {name: windows(lines, "train", args.window) for name, lines in curves.items()}
    test_curves = {name: {x["step"]: x["neg_elbo"] for x in lines if x["split"] == "test"}
                   for name, lines in curves.items()}

    rows = ["| steps | train −ELBO fp32 | train −ELBO bf16 | train −ELBO fp32 (seed 1) "
            "| test −ELBO fp32 | test −ELBO bf16 | test −ELBO fp32 (seed 1) |",
            "|---|---|---|---|---|---|---|"]
    for step in sorted(train_curves["fp32"]):
        cells = [f"{train_curves[n].get(step, float('nan')):.1f}" for n in variants]
        cells += [f"{test_curves[n].get(step, float('nan')):.1f}" for n in variants]
        rows.append(f"| {step} | " + " | ".join(cells) + " |")
    timing = ", ".join(f"{n} {s:.3f} s/step" for n, s in seconds.items())
    text = (f"# bf16 vs fp32 ELBO curves\n\nconfig: {args.config}, {args.steps} steps; −ELBO in nats per sequence "
            f"(train: mean over each window of {args.window} steps).\n\n" + "\n".join(rows) + "\n\n"
            + (f"wall time: {timing}\n" if timing else ""))
    (out / "parity.md").write_text(text)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, lines in curves.items():
        pts = [(x["step"], x["neg_elbo"]) for x in lines if x["split"] == "train"]
        ax.plot(*zip(*pts), label=f"train {name}", alpha=0.7)
        pts = sorted(test_curves[name].items())
        ax.plot(*zip(*pts), "o--", label=f"test {name}")
    ax.set_xlabel("step")
    ax.set_ylabel("−ELBO (nats per sequence)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "parity.png", dpi=120)
    print(f"wrote {out / 'parity.md'} and {out / 'parity.png'}")


if __name__ == "__main__":
    main()
