#!/usr/bin/env python
"""Export a trained run as a shipped pretrained model (safetensors, no pickle).

    python tools/export_pretrained.py runs/pusher_actions_pretrained pusher-actions \
        --summary "action-conditioned SVG-LP + optimal σ on the embedded pushing world"

Writes ``seqvae/pretrained/<file>.safetensors`` (weights cast to --dtype; the run config,
data spec and step in its metadata) and records its SHA-256 in
``seqvae/pretrained/manifest.json``. The model card ``<file>.md`` is written by hand
beside it (config, command, steps, wall time, hardware, figures).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from seqvae import pretrained
from seqvae.checkpoint import CheckpointError
from seqvae.data.spec import DataSpec
from seqvae.io import atomic_write_text
from seqvae.loading import load_model

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder or checkpoint.pt")
    parser.add_argument("name", help="the name users load it by, e.g. pusher-actions")
    parser.add_argument("--summary", default="", help="one line: what the model is")
    parser.add_argument("--dtype", default="fp16", choices=sorted(DTYPES), help="storage type of the weights")
    args = parser.parse_args(argv)
    try:
        model, cfg, payload = load_model(args.run)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"export_pretrained: error: {err}", file=sys.stderr)
        return 2
    stem = args.name.replace("-", "_")
    path = pretrained.HERE / f"{stem}.safetensors"
    digest = pretrained.export(model, cfg, DataSpec(**payload["spec"]), int(payload["step"]), path,
                               dtype=DTYPES[args.dtype], source_run=str(args.run))
    manifest = json.loads(pretrained.MANIFEST.read_text()) if pretrained.MANIFEST.is_file() else {}
    manifest[args.name] = {"file": path.name, "sha256": digest, "card": f"{stem}.md",
                           "summary": args.summary or manifest.get(args.name, {}).get("summary", "")}
    atomic_write_text(pretrained.MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, step {payload['step']}, sha256 {digest[:12]}…) "
          f"and {pretrained.MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
