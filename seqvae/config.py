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

from seqvae import components
from seqvae.amp import check_precision
from seqvae.io import atomic_write_text, plain
from seqvae.registry import DATASETS, LIKELIHOODS, MODELS, ComponentConfig


class ConfigError(ValueError):
    """A config file or override is wrong; the message says what and how to fix it."""


LR_SCHEDULES = ("constant", "cosine")   # train.lr_schedule (seqvae/training/lr_schedule.py)


@dataclass
class TrainConfig:
    """Arguments of the one training loop (:mod:`seqvae.training`)."""

    out_dir: str = "runs/default"     # run folder: config.yaml, metrics.jsonl, checkpoints, grids
    steps: int = 1000                 # optimizer steps in total
    time_limit_minutes: float = 0.0   # stop earlier once training has run this long (0: no limit);
                                      # the stop is a normal end
    batch_size: int = 32              # per process (DDP: global batch = batch_size * world)
    lr: float = 1e-3                  # Adam learning rate (the peak of the schedule)
    lr_schedule: str = "constant"     # constant | cosine (to lr * lr_final_fraction at train.steps);
                                      # seqvae/training/lr_schedule.py
    lr_warmup_steps: int = 0          # linear warm-up steps at the start (0: none)
    lr_final_fraction: float = 0.1    # cosine: the last step's rate as a fraction of train.lr
    init_from: str = ""               # start from these model weights (fresh optimizer, step 0): a checkpoint or run
                                      # folder, an exported .safetensors file, or pretrained:NAME; the shapes must match
    beta1: float = 0.9                # Adam beta1
    beta2: float = 0.999              # Adam beta2
    weight_decay: float = 0.0
    precision: str = "auto"           # auto | fp32 | bf16 | fp16  (auto: bf16 where the GPU/CPU computes it natively,
                                      # else fp16 + grad scaler on GPU, fp32 on CPU; run.json records what was used;
                                      # the names are seqvae.amp.PRECISIONS)
    # Which updates are applied (seqvae/update_guard.py). The loss is summed over every pixel, so
    # gradient norms grow with image size: the skip rule is relative to the run's own history.
    grad_clip: float = 0.0            # clip the global grad norm to this absolute value (0: off); clipped_frac is
                                      # logged per window, with a warning once most updates are clipped
    skip_grad_factor: float = 10.0    # skip an update whose grad norm exceeds this × the median of recent accepted
                                      # norms (0: off); non-finite norms are always skipped
    skip_warmup: int = 50             # accepted updates before the relative rule applies (the median needs a history)
    skip_window: int = 100            # accepted norms the running median looks back on
    skip_grad_norm_abs: float = 0.0   # also skip above this ABSOLUTE norm (0: off); it does not carry across
                                      # image sizes
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
    compile: bool | None = None       # torch.compile the forward + loss (null: on for CUDA, off on CPU;
                                      # seqvae.compiled)
    tensorboard: bool = False         # also log to TensorBoard when the package is installed

    def __post_init__(self) -> None:
        """Refuse values the loop cannot run with (the config system reports them as ConfigError)."""
        if not isinstance(self.out_dir, str) or not self.out_dir.strip():
            raise ValueError("train.out_dir must name the run folder (e.g. train.out_dir=runs/my_run), got ''")
        for key in ("steps", "batch_size", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"train.{key} must be at least 1, got {getattr(self, key)}")
        for key in ("time_limit_minutes", "weight_decay", "lr_warmup_steps", "eval_every", "eval_batches",
                    "image_every", "checkpoint_every", "num_workers", "threads"):
            if getattr(self, key) < 0:
                raise ValueError(f"train.{key} must be 0 or more (0: {_ZERO_MEANS[key]}), got {getattr(self, key)}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"train.beta1 and train.beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0 <= self.lr_final_fraction <= 1:
            raise ValueError(f"train.lr_final_fraction must be in [0, 1], got {self.lr_final_fraction}")
        if not isinstance(self.init_from, str):
            raise ValueError(f"train.init_from must be a path or pretrained:NAME, got {self.init_from!r}")
        check_precision(self.precision, "train.precision")


_ZERO_MEANS = {"time_limit_minutes": "no limit", "weight_decay": "none", "lr_warmup_steps": "no warm-up",
               "eval_every": "only at the end", "eval_batches": "the whole test split",
               "image_every": "only at the end", "checkpoint_every": "only at the end",
               "num_workers": "load in the main process", "threads": "chosen from measured step times"}


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
        raw = read_yaml(path)
        return cls.from_dict(apply_overrides(raw, overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML, atomically (a reader never sees half of it)."""
        atomic_write_text(path, to_yaml(self))


MODEL_SECTIONS = ("data", "model", "likelihood")   # what a checkpoint's weights were trained for


def config_changes(old: dict[str, Any], new: dict[str, Any], sections: tuple[str, ...] = MODEL_SECTIONS) -> list[str]:
    """The settings of ``sections`` that differ between two config mappings, as
    ``"model.latent_dim: 4 -> 8"`` (e.g. what overrides change against a checkpoint)."""
    def flat(node: Any, prefix: str) -> dict[str, Any]:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                out.update(flat(value, f"{prefix}.{key}"))
            return out
        return {prefix: plain(node)}

    changes = []
    for section in sections:
        a, b = flat(old.get(section, {}), section), flat(new.get(section, {}), section)
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                changes.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return changes


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
        raw = read_yaml(path)
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of settings, got {type(raw).__name__}")
    return _build(config_class, apply_overrides(raw, overrides), "")


def build_section(config_class: type, raw: dict[str, Any], where: str) -> Any:
    """One typed config section (e.g. a world's ``plan.cost``) from a mapping, checked like
    a run config; ``where`` names the section in error messages."""
    return _build(config_class, raw, where)


def to_yaml(config: Any) -> str:
    """A config dataclass as YAML (what a run folder records)."""
    return yaml.safe_dump(plain(dataclasses.asdict(config)), sort_keys=False)


# ---------------------------------------------------------------------- helpers
def read_yaml(path: str | Path) -> Any:
    """The plain data of a YAML file (empty file: ``{}``). Syntax errors and tags that would
    build Python objects (``!!python/...``) are a :class:`ConfigError` naming the line."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: {_yaml_problem(err)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (a YAML config is expected)") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line saying what is wrong with some YAML and where."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if isinstance(err, yaml.constructor.ConstructorError) and "tag" in problem:
        tag = problem.split("tag", 1)[1].strip(" '").replace("tag:yaml.org,2002:", "!!")
        return (f"{where}the tag {tag} asks YAML to build a Python object; seqvae configs hold plain values "
                "(numbers, strings, lists, mappings) and never construct objects, so the file was refused and "
                "nothing in it was run. Remove the tag")
    return f"{where}not valid YAML ({problem}); fix the syntax there"


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
        try:
            node[parts[-1]] = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is {_yaml_problem(err)}") from None
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


components.register_all()   # every data set, model, head and world registers itself (seqvae.components)
