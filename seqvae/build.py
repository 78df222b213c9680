"""Build data, heads and models from a :class:`RunConfig`, and models from checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqvae.checkpoint import load_checkpoint
from seqvae.config import ConfigError, RunConfig
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


def load_model(path: str | Path, device: torch.device | str = "cpu",
               overrides: list[str] | tuple[str, ...] = ()) -> tuple[SequenceVAE, RunConfig, dict[str, Any]]:
    """Rebuild a trained model from a checkpoint (file or run folder) or a shipped
    pretrained model (``pretrained:NAME``), in eval mode.

    ``overrides`` (``key=value``) may change data or evaluation settings, e.g. point
    ``data.root`` elsewhere; the model is rebuilt from the checkpoint's own spec.
    """
    from seqvae.config import apply_overrides

    if str(path).startswith(PRETRAINED_PREFIX):
        from seqvae import pretrained

        name = str(path)[len(PRETRAINED_PREFIX):]
        entry = pretrained.info(name)
        tensors, meta = pretrained.read_weights(pretrained.HERE / entry.file, entry.sha256)
        meta["config"] = apply_overrides(meta["config"], overrides)
        model, cfg = pretrained.build_from_weights(tensors, meta, device)
        return model, cfg, {**meta, "config": cfg.to_dict(), "pretrained": name}
    payload = load_checkpoint(path)
    cfg = RunConfig.from_dict(apply_overrides(payload["config"], overrides))
    spec = DataSpec(**payload["spec"])
    model = build_model(cfg, spec)
    model.load_state_dict(payload["model"])
    model.to(device).eval()
    return model, cfg, payload
