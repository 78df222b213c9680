"""Typed run configuration: YAML files + dotted ``key=value`` overrides.

A run config composes four typed parts::

    data:       {name: shapes, ...}        # validated by the data set's registered dataclass
    model:      {name: conv_vae, ...}      # validated by the model's registered dataclass
    likelihood: {name: optimal_sigma, ...} # validated by the head's registered dataclass
    train:      {steps: ..., ...}          # TrainConfig

Unknown keys are rejected with the closest valid key suggested. Overrides are applied to
the raw mapping before validation, so ``model.g_dim=64`` is checked exactly like YAML.
The resolved config is written into the run folder (``config.yaml``) and stored in
every checkpoint, from which :func:`RunConfig.from_dict` rebuilds it.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import seqvae.components  # noqa: F401  (registers every data set, model and head)
from seqvae.io import plain
from seqvae.registry import DATASETS, LIKELIHOODS, MODELS, ComponentConfig


class ConfigError(ValueError):
    """A config file or override is wrong; the message says what and how to fix it."""


@dataclass
class TrainConfig:
    """Arguments of the one training loop (:mod:`seqvae.train`)."""

    out_dir: str = "runs/default"     # run folder: config.yaml, metrics.jsonl, checkpoints, grids
    steps: int = 1000                 # optimizer steps in total
    time_limit_minutes: float = 0.0   # stop earlier once training has run this long (0: no limit); the stop is a normal end
    batch_size: int = 32              # per process (DDP: global batch = batch_size * world)
    lr: float = 1e-3                  # Adam learning rate
    beta1: float = 0.9                # Adam beta1
    beta2: float = 0.999              # Adam beta2
    weight_decay: float = 0.0
    precision: str = "auto"           # auto | fp32 | bf16 | fp16  (auto: bf16 where the GPU/CPU computes it natively,
                                      # else fp16 + grad scaler on GPU, fp32 on CPU; run.json records what was used)
    # Which updates are applied (seqvae/update_guard.py). The loss is summed over every pixel, so
    # gradient norms grow with image size: the skip rule is relative to the run's own history.
    grad_clip: float = 0.0            # clip the global grad norm to this absolute value (0: off); clipped_frac is logged per window, with a warning once most updates are clipped
    skip_grad_factor: float = 10.0    # skip an update whose grad norm exceeds this × the median of recent accepted norms (0: off); non-finite norms are always skipped
    skip_warmup: int = 50             # accepted updates before the relative rule applies (the median needs a history)
    skip_window: int = 100            # accepted norms the running median looks back on
    skip_grad_norm_abs: float = 0.0   # also skip above this ABSOLUTE norm (0: off); it does not carry across image sizes
    max_consecutive_skips: int = 50   # stop with an error (exit 2) after this many skipped updates in a row (0: never)
    seed: int = 0                     # global seed; each rank uses seed * world + rank
    num_workers: int = 0              # DataLoader workers per process
    log_every: int = 50               # steps between JSONL metric lines
    eval_every: int = 500             # steps between test-split evaluations (0: only at the end)
    eval_batches: int = 20            # batches per periodic evaluation (0: the whole test split)
    image_every: int = 500            # steps between reconstruction/sample PNG grids (0: only at the end)
    checkpoint_every: int = 500       # steps between checkpoints (the last step always writes one)
    threads: int = 0                  # torch CPU threads (0: chosen from measured step times, seqvae.threads)
    channels_last: bool = False       # channels_last memory format (pays on GPU convs)
    compile: bool | None = None       # torch.compile the forward + loss (null: on for CUDA, off on CPU; seqvae.compiled)
    tensorboard: bool = False         # also log to TensorBoard when the package is installed


@dataclass
class RunConfig:
    data: ComponentConfig
    model: ComponentConfig
    likelihood: ComponentConfig
    train: TrainConfig = field(default_factory=TrainConfig)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        if not isinstance(raw, dict):
            raise ConfigError(f"a run config must be a mapping, got {type(raw).__name__}")
        _reject_unknown(raw, ["data", "model", "likelihood", "train"], "")
        parts = {}
        for key, registry in (("data", DATASETS), ("model", MODELS), ("likelihood", LIKELIHOODS)):
            sub = raw.get(key)
            if not isinstance(sub, dict) or "name" not in sub:
                raise ConfigError(
                    f"config section {key!r} needs a 'name' (one of: {', '.join(registry.names())})"
                )
            try:
                config_class = registry.config_class(sub["name"])
            except KeyError as err:
                raise ConfigError(f"{key}.name: {err.args[0]}") from None
            parts[key] = _build(config_class, registry.upgrade(sub), key)
        parts["train"] = _build(TrainConfig, _legacy_train(raw.get("train", {}) or {}), "train")
        return cls(**parts)

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (configs live under configs/, e.g. configs/demo/)")
        raw = yaml.safe_load(path.read_text()) or {}
        return cls.from_dict(apply_overrides(raw, overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def find_repo_file(name: str | Path) -> Path:
    """A file shipped in the repository (e.g. ``configs/demo/svg.yaml``), looked up from the
    current folder, then from the repository that holds this package."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / name).is_file():
            return root / name
    raise ConfigError(f"cannot find {name}; run this from the seqvae repository")


def load_dataclass(config_class: type, path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """A typed command config (a dataclass, possibly nested) from an optional YAML file and
    dotted ``key=value`` overrides, checked exactly like a run config (unknown keys are
    rejected with the closest valid key suggested)."""
    raw: dict[str, Any] = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (configs live under configs/)")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of settings, got {type(raw).__name__}")
    return _build(config_class, apply_overrides(raw, overrides), "")


def to_yaml(config: Any) -> str:
    """A config dataclass as YAML (what a run folder records)."""
    return yaml.safe_dump(plain(dataclasses.asdict(config)), sort_keys=False)


# ---------------------------------------------------------------------- helpers
def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply dotted ``a.b=value`` overrides (values parsed as YAML) to a nested mapping."""
    raw = _deep_copy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.steps=100)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(value) if value != "" else ""
    return raw


def _legacy_train(raw: Any) -> Any:
    """Configs saved before the relative skip rule carry ``skip_grad_norm``: its default 0
    (skip only non-finite updates) is dropped so that old run folders and checkpoints load;
    any other value was an absolute threshold and must now be named as one."""
    if not isinstance(raw, dict) or "skip_grad_norm" not in raw:
        return raw
    raw = dict(raw)
    value = raw.pop("skip_grad_norm")
    if value not in (0, 0.0, None):
        raise ConfigError(
            f"train.skip_grad_norm={value!r} is gone: an absolute threshold does not carry across image sizes (the "
            "loss is summed over pixels). Updates are now skipped relative to recent gradient norms "
            "(train.skip_grad_factor); to keep an absolute threshold, write train.skip_grad_norm_abs instead."
        )
    return raw


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


def _reject_unknown(raw: dict[str, Any], valid: list[str], where: str) -> None:
    for key in raw:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" Did you mean '{where}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{where}{key}'.{hint} Valid keys: {', '.join(valid)}")


def _build(config_class: type, raw: dict[str, Any], where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config section {where!r} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    _reject_unknown(raw, list(fields), f"{where}." if where else "")
    hints = typing.get_type_hints(config_class)
    values = {}
    for key, value in raw.items():
        values[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    try:
        return config_class(**values)
    except (TypeError, ValueError) as err:  # missing fields, or a value its __post_init__ refuses
        raise ConfigError(f"config section {where!r}: {err}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check/convert a YAML value to the field's annotated type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 1e-3 as a string
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    return value
