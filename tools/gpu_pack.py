#!/usr/bin/env python
"""Run folders packed to travel to a lent GPU and back (issue 27.1; tools/gpu_run.sh uses it).

The device tool carries the working tree and what ``carry`` names, 64 MiB in all, and
brings back at most 8 files of at most 16 MiB each (64 MiB together). A shipped-size
pusher run's checkpoint is ~45 MB: fp32 weights (15 MB) and Adam's two moments (15 MB
each). A *pack* is the whole run — the checkpoint (weights, optimizer, scaler, step,
RNG, update guard, config) and the run's config.yaml / run.json / metrics.jsonl — in one
``torch.save`` blob split into parts ``checkpoint.pack-00, -01, …`` of at most
``--part-mib``, with the Adam moments stored as bf16 (``--moments``; ~0.4 % rounding of a
running average, which the next steps overwrite) and the weights as fp32 (``--weights
fp16`` halves them, a one-time rounding of 2⁻¹¹ relative): 30 MB (two parts) for a
shipped-size run, so one run travels beside the repository (≈ 18 MB), or two with
``--weights fp16`` (22 MB each). Unpacked, it is a run folder that ``seqvae train
--resume`` continues as if it had never left.

    python tools/gpu_pack.py pack RUN_DIR gpu_carry [--override train.steps=400000 ...]
    python tools/gpu_pack.py unpack PACK_DIR NEW_RUN_DIR        # e.g. the pack gpu_run.sh brought back
    python tools/gpu_pack.py export PACK_DIR FILE.safetensors   # fp16 weights (train.init_from can start from it)

``pack`` writes ``DEST/<name>/`` (name: the run folder's, made of letters, digits, '.', '_'
and '-') with the parts and ``pack.json`` (sizes, SHA-256 of each part, what was rounded,
the overrides gpu_run.sh adds when it continues the run).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from seqvae.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

FORMAT, VERSION = "seqvae-gpu-pack", 1
PART_PREFIX = "checkpoint.pack-"
MIB = 1 << 20
RUN_FILES = ("config.yaml", "run.json", "metrics.jsonl")
MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
CAST = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def safe_name(name: str) -> str:
    """A file/folder name the device tool brings back (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "run"


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() and tensor.dim() > 0 else tensor


def pack(run_dir: Path, dest: Path, *, part_mib: float = 16.0, moments: str = "bf16", weights: str = "fp32",
         overrides: list[str] | tuple[str, ...] = (), name: str | None = None) -> dict[str, Any]:
    """Pack ``run_dir`` into ``dest/<name>/``; returns the manifest (also written as pack.json)."""
    run_dir = Path(run_dir)
    payload = load_checkpoint(run_dir / "checkpoint.pt")
    for state in payload["optimizer"]["state"].values():
        for key in MOMENTS:
            if key in state:
                state[key] = _cast(state[key], CAST[moments])
    payload["model"] = {k: _cast(v, CAST[weights]) for k, v in payload["model"].items()}
    files = {f: (run_dir / f).read_text() for f in RUN_FILES if (run_dir / f).is_file()}
    blob = {"format": FORMAT, "version": VERSION, "payload": payload, "files": files,
            "rounded": {"moments": moments, "weights": weights}, "overrides": list(overrides),
            "source": str(run_dir)}
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    data = buffer.getvalue()
    out = Path(dest) / safe_name(name or run_dir.name)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(PART_PREFIX + "*"):
        old.unlink()
    size = max(1, int(part_mib * MIB))
    parts = []
    for i, lo in enumerate(range(0, len(data), size)):
        chunk = data[lo: lo + size]
        path = out / f"{PART_PREFIX}{i:02d}"
        path.write_bytes(chunk)
        parts.append({"file": path.name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    manifest = {"name": out.name, "step": int(payload["step"]), "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "parts": parts, "rounded": blob["rounded"],
                "overrides": list(overrides), "source": str(run_dir)}
    (out / "pack.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def part_files(pack_dir: Path) -> list[Path]:
    parts = sorted(Path(pack_dir).glob(PART_PREFIX + "*"), key=lambda p: int(p.name[len(PART_PREFIX):]))
    if not parts:
        raise FileNotFoundError(f"no {PART_PREFIX}NN files in {pack_dir}")
    numbers = [int(p.name[len(PART_PREFIX):]) for p in parts]
    if numbers != list(range(len(parts))):
        raise ValueError(f"{pack_dir}: parts {numbers} are not 00..{len(parts) - 1:02d}: one is missing")
    return parts


def read_pack(pack_dir: Path, sha256: str | None = None) -> dict[str, Any]:
    """The blob of a pack (its parts joined), checked against ``sha256`` when given."""
    data = b"".join(p.read_bytes() for p in part_files(pack_dir))
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{pack_dir}: the joined parts do not match their SHA-256 (a part is damaged or stale)")
    blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if blob.get("format") != FORMAT:
        raise ValueError(f"{pack_dir} is not a seqvae GPU pack")
    return blob


def unpack(pack_dir: Path, run_dir: Path, *, force: bool = False, sha256: str | None = None) -> int:
    """Make ``run_dir`` a run folder of the packed run (moments and weights back in fp32);
    returns its step. An existing checkpoint.pt is never overwritten unless ``force``."""
    run_dir = Path(run_dir)
    if (run_dir / "checkpoint.pt").exists() and not force:
        raise FileExistsError(f"{run_dir} already holds checkpoint.pt; unpack into a new folder (or pass --force)")
    blob = read_pack(pack_dir, sha256)
    payload = blob["payload"]
    payload["model"] = {k: _cast(v, torch.float32) for k, v in payload["model"].items()}
    for state in payload["optimizer"]["state"].values():
        for key in MOMENTS:
            if key in state:
                state[key] = _cast(state[key], torch.float32)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, text in blob["files"].items():
        (run_dir / name).write_text(text)
    save_checkpoint(run_dir / "checkpoint.pt", payload)
    return int(payload["step"])


def overrides_of(pack_dir: Path) -> list[str]:
    manifest = Path(pack_dir) / "pack.json"
    if manifest.is_file():
        return list(json.loads(manifest.read_text()).get("overrides", []))
    return list(read_pack(pack_dir)["overrides"])


def export_weights(run_dir: Path, path: Path) -> str:
    """The run's weights as an fp16 safetensors file (seqvae.pretrained.export); its SHA-256."""
    from seqvae import pretrained
    from seqvae.data.spec import DataSpec
    from seqvae.loading import load_model

    model, cfg, payload = load_model(run_dir)
    return pretrained.export(model, cfg, DataSpec(**payload["spec"]), int(payload["step"]), path,
                             dtype=torch.float16, source_run=str(run_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="pack a run folder into DEST/<name>/")
    p.add_argument("run")
    p.add_argument("dest")
    p.add_argument("--name", default=None, help="the pack's name (default: the run folder's)")
    p.add_argument("--part-mib", type=float, default=16.0)
    p.add_argument("--moments", choices=sorted(CAST), default="bf16")
    p.add_argument("--weights", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--override", action="append", default=[], help="key=value the GPU run continues with")
    u = sub.add_parser("unpack", help="make a run folder of a pack")
    u.add_argument("pack")
    u.add_argument("run")
    u.add_argument("--force", action="store_true")
    e = sub.add_parser("export", help="fp16 safetensors of a pack's weights")
    e.add_argument("pack")
    e.add_argument("file")
    args = parser.parse_args(argv)
    if args.cmd == "pack":
        m = pack(Path(args.run), Path(args.dest), part_mib=args.part_mib, moments=args.moments, weights=args.weights,
                 overrides=args.override, name=args.name)
        print(f"packed {args.run} (step {m['step']}) into {Path(args.dest) / m['name']}: {len(m['parts'])} parts, "
              f"{m['bytes'] / MIB:.1f} MiB")
    elif args.cmd == "unpack":
        step = unpack(Path(args.pack), Path(args.run), force=args.force)
        print(f"unpacked {args.pack} into {args.run} (step {step}); continue it with "
              f"`seqvae train {Path(args.run) / 'config.yaml'} --resume train.out_dir={args.run}`")
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            unpack(Path(args.pack), Path(tmp) / "run")
            digest = export_weights(Path(tmp) / "run", Path(args.file))
        print(f"wrote {args.file} (sha256 {digest[:12]}…)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
