"""Pretrained models shipped inside the package, loaded without unpickling anything.

Each model is one ``.safetensors`` file (tensors only; its metadata holds the run config,
the data spec and the training step as JSON) listed in ``manifest.json`` with its SHA-256,
next to a model card (``NAME.md``: config, command, steps, wall time, hardware, figures).
A file whose bytes do not match the manifest is refused::

    model, cfg = seqvae.pretrained.load(NAME)        # NAME: a key of manifest.json
    seqvae eval --pretrained NAME                    # wherever a command takes a checkpoint
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqvae.config import RunConfig
from seqvae.data.spec import DataSpec
from seqvae.models.base import SequenceVAE

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"


class PretrainedError(ValueError):
    """An unknown name, or a weights file that is missing or does not match the manifest."""


@dataclass(frozen=True)
class PretrainedInfo:
    name: str
    file: str          # the .safetensors file beside this module
    sha256: str        # of that file's bytes
    card: str          # the model card (markdown) beside this module
    summary: str       # one line: what it is


def available() -> dict[str, PretrainedInfo]:
    """The shipped models by name (from ``manifest.json``)."""
    if not MANIFEST.is_file():
        return {}
    raw = json.loads(MANIFEST.read_text())
    return {name: PretrainedInfo(name=name, **entry) for name, entry in raw.items()}


def info(name: str) -> PretrainedInfo:
    models = available()
    if name not in models:
        known = ", ".join(sorted(models)) or "none are shipped in this copy"
        raise PretrainedError(f"no pretrained model {name!r}; available: {known}")
    return models[name]


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_weights(path: str | Path,
                 expected_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata (``config``, ``spec``, ``step``, ...) of an exported model file.
    With ``expected_sha256`` the file's bytes must match it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"pretrained weights {path} are missing; reinstall seqvae or re-export them with "
                              "tools/export_pretrained.py")
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise PretrainedError(f"{path} does not match the SHA-256 in {MANIFEST.name}: the file was changed or "
                              "damaged, so it is refused. Reinstall seqvae to restore it.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise PretrainedError(f"{path} is not a readable safetensors file ({err})") from None
    try:
        metadata = {key: json.loads(value) for key, value in meta.items()}
    except json.JSONDecodeError as err:
        raise PretrainedError(f"{path}: its metadata is not JSON ({err})") from None
    missing = [key for key in ("config", "spec", "step") if key not in metadata]
    if missing:
        raise PretrainedError(f"{path} lacks the metadata {', '.join(missing)}; it is not a seqvae export")
    return tensors, metadata


def build_from_weights(tensors: dict[str, torch.Tensor], metadata: dict[str, Any],
                       device: torch.device | str = "cpu", source: str | Path = "the exported weights"
                       ) -> tuple[SequenceVAE, RunConfig]:
    """The model the metadata's config describes, with the tensors loaded (float32), in eval mode.
    Tensors that do not fit that model (one missing, added or resized) are a :class:`PretrainedError`
    naming ``source`` (the file) and the tensors."""
    from seqvae.build import build_model, weight_mismatch

    cfg = RunConfig.from_dict(metadata["config"])
    try:
        spec = DataSpec(**metadata["spec"])
    except TypeError as err:
        raise PretrainedError(f"{source}: its metadata 'spec' is not a seqvae data spec ({err}); the file is damaged "
                              "or was edited. Export it again with tools/export_pretrained.py") from None
    model = build_model(cfg, spec)
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    what = weight_mismatch(model, state)
    if what:
        raise PretrainedError(f"{source}: its weights do not fit the model its own metadata describes ({what}); the "
                              "file is damaged or was edited. Export it again with tools/export_pretrained.py, or use "
                              "the run's checkpoint")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), cfg


def load(name: str, device: torch.device | str = "cpu") -> tuple[SequenceVAE, RunConfig]:
    """A shipped pretrained model by name, verified against the manifest, in eval mode."""
    entry = info(name)
    tensors, metadata = read_weights(HERE / entry.file, entry.sha256)
    return build_from_weights(tensors, metadata, device, HERE / entry.file)


def load_with_metadata(name: str, device: torch.device | str = "cpu") -> tuple[SequenceVAE, RunConfig, dict[str, Any]]:
    """As :func:`load`, plus the file's metadata (``step``, ...), as :func:`seqvae.loading.load_model` returns."""
    entry = info(name)
    tensors, metadata = read_weights(HERE / entry.file, entry.sha256)
    model, cfg = build_from_weights(tensors, metadata, device, HERE / entry.file)
    return model, cfg, metadata


def export(model: SequenceVAE, cfg: RunConfig, spec: DataSpec, step: int, path: str | Path,
           dtype: torch.dtype = torch.float16, **extra: Any) -> str:
    """Write ``model``'s weights (floats cast to ``dtype``) and its config/spec/step (and
    ``extra`` JSON-able metadata) as safetensors; returns the file's SHA-256."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    from seqvae.io import atomic_path

    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu()
               for k, v in model.state_dict().items()}
    metadata = {"config": cfg.to_dict(), "spec": asdict(spec), "step": step, **extra}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in metadata.items()})
    return sha256(path)
