"""Reading pretrained weights files (LPIPS backbones, FID's Inception, ...) as tensors only.

Every weights file a metric uses goes through :func:`load_state_dict_file`: ``.safetensors``
with safetensors, anything else with ``torch.load(weights_only=True)``, which refuses a
pickle that would construct arbitrary Python objects (and so run code). Only the resulting
tensors are handed to third-party code (lpips, torch-fidelity), which never sees the path.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import Tensor


class UnsafeWeightsError(ValueError):
    """A weights file holds Python objects other than tensors and plain containers; it was
    refused and nothing in it was run."""


def load_state_dict_file(path: str | os.PathLike, what: str) -> dict[str, Tensor]:
    """A ``{name: tensor}`` dict from ``path`` without running code from the file.

    ``what`` names the consumer in error messages (e.g. ``"LPIPS backbone"``). Raises
    :class:`UnsafeWeightsError` for a file that holds code or other objects, ``ValueError``
    for one that is not a readable weights file.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise ValueError(f"{what}: {path} is not a readable safetensors file ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:200] if str(err) else ''})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0][:160] if str(err) else ""
        raise UnsafeWeightsError(
            f"{what}: {path} holds Python objects other than tensors, which could run code when loaded; it was "
            f"refused and nothing in it was run ({first}). Use the original weights file (a plain state_dict)."
        ) from None
    except Exception as err:  # truncated zip, not a torch file at all ...
        raise ValueError(f"{what}: {path} is not a readable weights file ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200] if str(err) else ''})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ValueError(f"{what}: {path} is not a state_dict of named tensors (got {type(state).__name__})")
    return state
