"""Where a trained model comes from: a checkpoint or run folder, an exported
``.safetensors`` file, or a shipped model (``pretrained:NAME``) — :func:`load_model` reads
any of them without unpickling anything a user hands over."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqvae import pretrained
from seqvae.build import build_model, load_weights
from seqvae.checkpoint import load_checkpoint
from seqvae.config import ConfigError, RunConfig, apply_overrides, config_changes
from seqvae.data.spec import DataSpec
from seqvae.models.base import SequenceVAE

PRETRAINED_PREFIX = "pretrained:"


def model_source(checkpoint: str | Path | None, pretrained: str | None) -> str:
    """What :func:`load_model` should read: a checkpoint path, or ``pretrained:NAME``."""
    if bool(checkpoint) == bool(pretrained):
        raise ConfigError("give either a checkpoint (a .pt file or a run folder) or --pretrained NAME "
                          f"(shipped: {', '.join(_pretrained_names()) or 'none'})")
    return f"{PRETRAINED_PREFIX}{pretrained}" if pretrained else str(checkpoint)


def _pretrained_names() -> list[str]:
    return sorted(pretrained.available())


EXPORT_SUFFIX = ".safetensors"


def is_export(source: str | Path) -> bool:
    """Whether ``source`` names exported weights (``pretrained:NAME`` or a ``.safetensors`` file)
    rather than a checkpoint or run folder."""
    return str(source).startswith(PRETRAINED_PREFIX) or str(source).endswith(EXPORT_SUFFIX)


def read_export(source: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str | None]:
    """Tensors, metadata and shipped name (None for a file) of ``pretrained:NAME`` (checked
    against the manifest) or of an exported ``.safetensors`` file (tools/export_pretrained.py)."""
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
    if is_export(path):
        tensors, meta, name = read_export(path)
        meta["config"] = apply_overrides(meta["config"], overrides)
        model, cfg = pretrained.build_from_weights(tensors, meta, device, path)
        return model, cfg, {**meta, "config": cfg.to_dict(), **({"pretrained": name} if name else {})}
    payload = load_checkpoint(path)
    cfg = RunConfig.from_dict(apply_overrides(payload["config"], overrides))
    spec = DataSpec(**payload["spec"])
    model = build_model(cfg, spec)
    load_weights(model, payload["model"], path,
                 config_changes(RunConfig.from_dict(payload["config"]).to_dict(), cfg.to_dict()) if overrides else [])
    model.to(device).eval()
    return model, cfg, payload
