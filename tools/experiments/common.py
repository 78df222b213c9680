"""Shared plumbing of the paper-reproduction tools in ``tools/experiments/``.

Every tool (β sweep = Table 1 / Fig. 3, decoder table = Table 2, information = Fig. 4,
σ convergence = Fig. 9) does the same four things, implemented once here:

1. **Config.** A base run config — :data:`TINY_CONFIG` (procedural ``shapes`` at 16×16,
   a small conv VAE; minutes on a CPU) or a YAML file given with ``--config`` (e.g.
   ``configs/svhn/conv_vae_optimal_sigma.yaml`` for paper scale on a GPU) — plus dotted
   ``key=value`` overrides, plus the variant's own likelihood section
   (:func:`variant_config`).
2. **Training.** Each variant trains with :func:`seqvae.training.train` into
   ``OUT/runs/<variant>``. A run folder whose checkpoint already reached ``train.steps``
   is skipped, one that stopped early is resumed, and a folder holding a run of a
   *different* config is never touched: the tool stops and says so (:func:`ensure_trained`).
3. **Evaluation.** The test-split bound with :func:`seqvae.evaluation.elbo.evaluate_elbo`
   (:func:`evaluate_run`), FID only when Inception weights are on disk (:func:`fid_weights`).
4. **Reporting.** ``OUT/table.md`` (markdown), ``OUT/results.json`` and PNG plots
   (matplotlib, Agg backend).

No number in a table is typed in by hand: each comes from a run the tool trained or found.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import yaml

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # run as a script: make ``seqvae`` importable from a checkout
    sys.path.insert(0, str(_ROOT))

from seqvae import amp  # noqa: E402
from seqvae.build import build_data  # noqa: E402
from seqvae.checkpoint import load_checkpoint  # noqa: E402
from seqvae.config import ConfigError, RunConfig, apply_overrides  # noqa: E402
from seqvae.evaluation.elbo import evaluate_elbo  # noqa: E402
from seqvae.loading import load_model  # noqa: E402
from seqvae.registry import LIKELIHOODS  # noqa: E402

__all__ = [
    "TINY_CONFIG", "ExperimentError", "Variant", "base_parser", "base_raw_config", "variant_config",
    "ensure_trained", "evaluate_run", "fid_weights", "read_metrics", "final_test_metrics",
    "markdown_table", "write_outputs", "fmt", "parse_floats", "parse_variant_spec", "default_device",
    "new_figure", "save_figure", "safe_name", "cli",
]

# A base config small enough for a CPU in minutes: 16×16 procedural shapes, a conv VAE of
# the paper's App. B shape (3 conv layers, channels doubling) but 16 base channels and an
# 8-dim latent. Evaluation covers the whole (small) test split, so the trainer's final
# test line in metrics.jsonl and the tools' own evaluation measure the same thing.
TINY_CONFIG: dict[str, Any] = {
    "data": {"name": "shapes", "image_size": 16, "channels": 3, "train_size": 8192, "val_size": 64,
             "test_size": 1024, "seed": 0},
    "model": {"name": "conv_vae", "base_channels": 16, "latent_dim": 8},
    "likelihood": {"name": "optimal_sigma"},
    "train": {"out_dir": "runs/experiment", "steps": 1000, "batch_size": 32, "lr": 1e-3, "log_every": 20,
              "eval_every": 0, "eval_batches": 0, "image_every": 0, "checkpoint_every": 500,
              "precision": "fp32"},  # the paper's bounds in float32 (bf16 buys little for these tiny nets)
}

# Train-section keys that change what a run computes. Two configs that agree on these (and
# on data, model and likelihood) describe the same run, whatever their logging cadence.
_RUN_DEFINING_TRAIN_KEYS = ("batch_size", "lr", "beta1", "beta2", "weight_decay", "precision", "grad_clip",
                            "skip_grad_factor", "skip_warmup", "skip_window", "skip_grad_norm_abs", "seed")


class ExperimentError(RuntimeError):
    """Something the user must sort out (e.g. a run folder holding a different run)."""


@dataclass
class Variant:
    """One trained model of an experiment.

    Attributes:
        name: folder name under ``OUT/runs`` (also the row key of tables and results.json).
        likelihood: the run's whole ``likelihood`` config section, e.g. ``{"name": "beta_vae", "beta": 0.01}``.
        label: how tables and plots name it.
        beta: the β set by hand (β-VAE rows), None where σ is learned.
    """

    name: str
    likelihood: dict[str, Any]
    label: str
    beta: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------ CLI
def cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a tool's ``main``; errors a user can fix print one line and give exit status 2."""
    from seqvae.checkpoint import CheckpointError

    try:
        return main(argv)
    except (ExperimentError, ConfigError, CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        return 2


def base_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every experiment tool shares (``--config``, ``--out``, ``--steps`` …)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*",
                        help="dotted key=value overrides of the base config, e.g. train.batch_size=64 data.root=...")
    parser.add_argument("--config", default="",
                        help="base YAML config (default: a tiny built-in config on 16×16 shapes that runs on a CPU); "
                             "paper scale: configs/svhn/conv_vae_optimal_sigma.yaml")
    parser.add_argument("--out", required=True, help="output folder: runs/<variant>/, table.md, results.json, PNGs")
    parser.add_argument("--steps", type=int, default=None, help="training steps per variant (default: the config's)")
    parser.add_argument("--seed", type=int, default=None, help="training seed of every variant (default: the config's)")
    parser.add_argument("--device", default=None, help="evaluation device (default: cuda if available, else cpu)")
    parser.add_argument("--eval-batches", type=int, default=None,
                        help="test batches per evaluation (default: the config's train.eval_batches; 0 = all)")
    parser.add_argument("--inception-weights", default=None,
                        help="torch-fidelity Inception-v3 weights for FID (default: the torch hub cache; "
                             "FID is reported as n/a when absent; nothing is downloaded)")
    parser.add_argument("--fid-samples", type=int, default=1000,
                        help="prior samples (and test images) per FID (paper-scale: 10000)")
    parser.add_argument("--quiet", action="store_true", help="no training progress bars")
    return parser


def parse_floats(text: str) -> list[float]:
    """``"10,1,0.1"`` → ``[10.0, 1.0, 0.1]`` (comma-separated, as in ``--betas``)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def parse_variant_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"beta_vae:beta=0.01,mean_activation=sigmoid"`` → ``("beta_vae", {"beta": 0.01, ...})``."""
    name, _, rest = spec.partition(":")
    fields: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        if "=" not in item:
            raise ExperimentError(f"head spec {spec!r}: {item!r} is not key=value")
        key, value = item.split("=", 1)
        fields[key.strip()] = yaml.safe_load(value)
    return name.strip(), fields


def default_device(name: str | None = None) -> torch.device:
    """``name`` if given, else CUDA when available, else CPU (the trainer's own choice)."""
    return torch.device(name) if name else torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------- config
def base_raw_config(args: argparse.Namespace) -> dict[str, Any]:
    """The base config mapping (``--config`` or :data:`TINY_CONFIG`) with the user's overrides.

    ``likelihood.*`` overrides are *not* applied here: every variant replaces the
    likelihood section, and :func:`variant_config` applies those overrides to each
    variant whose head has that field.
    """
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (configs live under configs/, e.g. configs/svhn/)")
        raw = yaml.safe_load(path.read_text()) or {}
    else:
        raw = copy.deepcopy(TINY_CONFIG)
    plain = [o for o in args.overrides if not o.strip().startswith("likelihood.")]
    raw = apply_overrides(raw, plain)
    if args.steps is not None:
        raw.setdefault("train", {})["steps"] = args.steps
    if args.seed is not None:
        raw.setdefault("train", {})["seed"] = args.seed
    RunConfig.from_dict(raw)  # validate early: a typo fails before any training
    return raw


def variant_config(base: dict[str, Any], variant: Variant, out: str | Path,
                   overrides: Sequence[str] = (), train_overrides: dict[str, Any] | None = None) -> RunConfig:
    """The run config of ``variant``: ``base`` with the variant's likelihood section, its run folder
    ``OUT/runs/<variant.name>``, the ``likelihood.*`` overrides its head accepts, and ``train_overrides``."""
    raw = copy.deepcopy(base)
    raw["likelihood"] = copy.deepcopy(variant.likelihood)
    try:
        head_config = LIKELIHOODS.config_class(variant.likelihood["name"])
    except KeyError as err:
        raise ConfigError(f"variant {variant.name!r}: {err.args[0]}") from None
    head_fields = {f.name for f in dataclasses.fields(head_config)}
    for item in overrides:
        key = item.strip().split("=", 1)[0]
        if key.startswith("likelihood.") and key.split(".", 1)[1] in head_fields and key != "likelihood.name":
            if key.split(".", 1)[1] not in variant.likelihood:  # the variant's own setting wins
                raw = apply_overrides(raw, [item])
    raw.setdefault("train", {}).update(train_overrides or {})
    raw["train"]["out_dir"] = str(Path(out) / "runs" / variant.name)
    return RunConfig.from_dict(raw)


# ------------------------------------------------------------------- training
def _run_defining(cfg: dict[str, Any]) -> dict[str, Any]:
    train_part = {k: cfg.get("train", {}).get(k) for k in _RUN_DEFINING_TRAIN_KEYS}
    return {"data": cfg.get("data"), "model": cfg.get("model"), "likelihood": cfg.get("likelihood"),
            "train": train_part}


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
        return out
    return [] if a == b else [f"{where}: found {a!r}, wanted {b!r}"]


def ensure_trained(cfg: RunConfig, progress: bool = True) -> tuple[Path, str]:
    """Train ``cfg`` into ``cfg.train.out_dir`` unless that is already done.

    Returns ``(run_dir, status)`` with status ``"skipped"`` (a checkpoint at
    ``train.steps`` or later exists), ``"resumed"`` (an earlier checkpoint was continued) or
    ``"trained"``. Raises :class:`ExperimentError` — touching nothing — when the folder
    holds a run of a different data/model/likelihood/optimizer config, or a run with
    metrics but no checkpoint.
    """
    from seqvae.training import train

    run_dir = Path(cfg.train.out_dir)
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists():
        payload = load_checkpoint(ckpt)
        # through RunConfig: fills keys added since the run was written with their defaults
        diffs = _differences(_run_defining(RunConfig.from_dict(payload["config"]).to_dict()),
                             _run_defining(cfg.to_dict()))
        if diffs:
            raise ExperimentError(
                f"{run_dir} holds a run of another config ({'; '.join(diffs[:4])}). It was left untouched; "
                "choose another --out folder, or move that run away yourself."
            )
        if payload["step"] >= cfg.train.steps:
            if payload["step"] > cfg.train.steps:
                print(f"  note: {run_dir} ran {payload['step']} steps (> the {cfg.train.steps} asked); using it as is")
            return run_dir, "skipped"
        train(cfg, resume=True, progress=progress)
        return run_dir, "resumed"
    if (run_dir / "metrics.jsonl").exists():
        raise ExperimentError(
            f"{run_dir} has metrics.jsonl but no checkpoint.pt (a run stopped before its first checkpoint). "
            "It was left untouched; remove or move that folder yourself, or choose another --out."
        )
    train(cfg, progress=progress)
    return run_dir, "trained"


# ----------------------------------------------------------------- evaluation
def evaluate_run(run_dir: str | Path, device: torch.device, eval_batches: int | None = None,
                 batch_size: int | None = None) -> tuple[dict[str, Any], Any, RunConfig]:
    """Load ``run_dir``'s checkpoint and evaluate the −log p bound on its test split.

    Returns ``(result, model, cfg)``: ``result`` is :func:`seqvae.evaluation.elbo.evaluate_elbo`'s
    dict (neg_elbo, nll, kl, bpd, valid_bound, σ / β_eff, …) plus ``step`` and
    ``discrete`` (the bound is of the 8-bit data).
    """
    model, cfg, payload = load_model(run_dir, device)
    test_set = build_data(cfg, "test")
    dtype = amp.resolve(cfg.train.precision, device)
    batches = cfg.train.eval_batches if eval_batches is None else eval_batches
    result = evaluate_elbo(model, test_set, batch_size or cfg.train.batch_size, device, dtype, batches)
    result["step"] = int(payload["step"])
    result["discrete"] = bool(getattr(model.likelihood, "discrete", False))
    return result, model, cfg


def fid_weights(path: str | None) -> tuple[str | None, str]:
    """``(weights_path, note)``: the Inception weights to use, or None and why FID is n/a.

    Never downloads (see :func:`seqvae.evaluation.fid.inception_weights_path`).
    """
    from seqvae.evaluation.fid import inception_weights_path
    from seqvae.evaluation.metrics import MissingWeightsError

    try:
        return inception_weights_path(path, download=False), ""
    except MissingWeightsError as err:
        return None, f"FID n/a: {err}"


# -------------------------------------------------------------------- metrics
def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All lines of ``run_dir/metrics.jsonl`` as dicts (in file order)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def final_test_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """The last ``split == "test"`` line of the run's metrics (the trainer's final evaluation)."""
    tests = [m for m in read_metrics(run_dir) if m.get("split") == "test"]
    return tests[-1] if tests else None


# ------------------------------------------------------------------ reporting
def fmt(value: Any, spec: str = ".2f", missing: str = "n/a") -> str:
    """Format a number for a table cell; None / non-finite → ``missing``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub markdown table from a header and rows of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_outputs(out: str | Path, title: str, table: str, notes: Sequence[str], results: dict[str, Any]) -> Path:
    """Write ``OUT/table.md`` (title, table, notes) and ``OUT/results.json``; print the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = f"# {title}\n\n{table}"
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    (out / "table.md").write_text(text)
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=2))
    print(text)
    print(f"wrote {out / 'table.md'}, {out / 'results.json'}")
    return out / "table.md"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def new_figure(*args: Any, **kwargs: Any):
    """``matplotlib.pyplot.subplots`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` as PNG and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")
    return path


def safe_name(text: str) -> str:
    """A folder-safe variant name (letters, digits, ``._-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")
