"""Build data, heads and models from a :class:`RunConfig`, and models from checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqvae.checkpoint import CheckpointError, load_checkpoint
from seqvae.config import ConfigError, RunConfig, config_changes
from seqvae.data.spec import DataSpec
from seqvae.models.base import SequenceVAE
from seqvae.registry import DATASETS, LIKELIHOODS, MODELS


def build_data(cfg: RunConfig, split: str):
    return DATASETS.build(cfg.data, split)


def build_model(cfg: RunConfig, spec: DataSpec) -> SequenceVAE:
    head = LIKELIHOODS.build(cfg.likelihood)
    try:
        return MODELS.build(cfg.model, head, spec)
    except ValueError as err:
        raise ConfigError(f"model {cfg.model.name!r} cannot be built for this data: {err}") from None


def weight_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str:
    """How ``state`` fails to fit ``model`` (resized, missing, unexpected entries), or ''."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
               if k in state and tuple(state[k].shape) != tuple(v.shape)]
    return "; ".join(filter(None, [
        f"shape of {', '.join(resized[:3])}" + (" ..." if len(resized) > 3 else "") if resized else "",
        f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "") if missing else "",
        f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else "") if unexpected else "",
    ]))


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path,
                 changes: list[str] = ()) -> None:
    """Load a checkpoint's ``state`` into ``model`` (built from the checkpoint's config, or
    from it with ``changes`` made by overrides). Weights that do not fit are a clear error:
    a :class:`ConfigError` naming the overrides when there are some (they change the model's
    shapes), else a :class:`CheckpointError` (the file does not match its own config)."""
    what = weight_mismatch(model, state)
    if what:
        if changes:
            raise ConfigError(
                f"the overrides {'; '.join(changes)} change the shapes of the model stored in {source} ({what}). "
                "A checkpoint keeps the model, likelihood and data shape it was trained with: drop those overrides, "
                "or train a new run in another train.out_dir"
            )
        raise CheckpointError(f"{source}: the weights do not fit the model its own config describes ({what}); "
                              "the file is damaged or was edited. Use another checkpoint of the run")
    model.load_state_dict(state)


PRETRAINED_PREFIX = "pretrained:"


def model_source(checkpoint: str | Path | None, pretrained: str | None) -> str:
    """What :func:`load_model` should read: a checkpoint path, or ``pretrained:NAME``."""
    if bool(checkpoint) == bool(pretrained):
        raise ConfigError("give either a checkpoint (a .pt file or a run folder) or --pretrained NAME "
                          f"(shipped: {', '.join(_pretrained_names()) or 'none'})")
    return f"{PRETRAINED_PREFIX}{pretrained}" if pretrained else str(checkpoint)


def _pretrained_names() -> list[str]:
    from seqvae import pretrained

    return sorted(pretrained.available())


EXPORT_SUFFIX = ".safetensors"


def is_export(source: str | Path) -> bool:
    """Whether ``source`` names exported weights (``pretrained:NAME`` or a ``.safetensors`` file)
    rather than a checkpoint or run folder."""
    return str(source).startswith(PRETRAINED_PREFIX) or str(source).endswith(EXPORT_SUFFIX)


def read_export(source: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str | None]:
    """Tensors, metadata and shipped name (None for a file) of ``pretrained:NAME`` (checked
    against the manifest) or of an exported ``.safetensors`` file (tools/export_pretrained.py)."""
    from seqvae import pretrained

    if str(source).startswith(PRETRAINED_PREFIX):
        name = str(source)[len(PRETRAINED_PREFIX):]
        entry = pretrained.info(name)
        return (*pretrained.read_weights(pretrained.HERE / entry.file, entry.sha256), name)
    if not Path(source).is_file():
        raise FileNotFoundError(f"no exported weights file at {source} (a .safetensors file written by "
                                "tools/export_pretrained.py); check the path")
    return (*pretrained.read_weights(source), None)


def initial_weights(source: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model weights (float32) and config of ``train.init_from``: a checkpoint or run
    folder, an exported ``.safetensors`` file or ``pretrained:NAME``; nothing is unpickled."""
    if is_export(source):
        tensors, meta, _ = read_export(source)
        return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, meta["config"]
    payload = load_checkpoint(source)
    return payload["model"], payload["config"]


def load_model(path: str | Path, device: torch.device | str = "cpu",
               overrides: list[str] | tuple[str, ...] = ()) -> tuple[SequenceVAE, RunConfig, dict[str, Any]]:
    """Rebuild a trained model from a checkpoint (file or run folder), an exported
    ``.safetensors`` file or a shipped pretrained model (``pretrained:NAME``), in eval mode.

    ``overrides`` (``key=value``) may change data or evaluation settings, e.g. point
    ``data.root`` elsewhere; the model is rebuilt from the checkpoint's own spec.
    """
    from seqvae.config import apply_overrides

    if is_export(path):
        from seqvae import pretrained

        tensors, meta, name = read_export(path)
        meta["config"] = apply_overrides(meta["config"], overrides)
        model, cfg = pretrained.build_from_weights(tensors, meta, device)
        return model, cfg, {**meta, "config": cfg.to_dict(), **({"pretrained": name} if name else {})}
    payload = load_checkpoint(path)
    cfg = RunConfig.from_dict(apply_overrides(payload["config"], overrides))
    spec = DataSpec(**payload["spec"])
    model = build_model(cfg, spec)
    load_weights(model, payload["model"], path,
                 config_changes(RunConfig.from_dict(payload["config"]).to_dict(), cfg.to_dict()) if overrides else [])
    model.to(device).eval()
    return model, cfg, payload
