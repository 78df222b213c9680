"""Build data, heads and models from a :class:`RunConfig`, and check weights against a model
(what a trained model is loaded from is :mod:`seqvae.loading`)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from seqvae.checkpoint import CheckpointError
from seqvae.config import ConfigError, RunConfig
from seqvae.data.spec import DataSpec
from seqvae.models.base import SequenceVAE
from seqvae.registry import DATASETS, LIKELIHOODS, MODELS


def build_data(cfg: RunConfig, split: str):
    return DATASETS.build(cfg.data, split)


def validation_split(cfg: RunConfig) -> tuple[Dataset | None, str]:
    """The run's validation split (e.g. to set an optimal-σ decoder's σ on), or None and why
    there is none."""
    try:
        val = build_data(cfg, "val")
    except (ValueError, OSError) as err:          # e.g. BAIR with data.val_fraction=0, no video falls in 'val'
        return None, str(err)
    try:
        size = len(val)
    except TypeError:                             # a split that does not say its size
        size = None
    if size == 0:
        return None, "the validation split is empty"
    return val, ""


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
