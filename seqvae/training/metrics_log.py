"""The run's metric lines: ``metrics.jsonl`` (rank 0), one JSON object per line, plus
TensorBoard scalars when asked for and installed."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seqvae import dist


class MetricsLog:
    """JSONL metrics (``{"step", "split", ...}`` per line), plus TensorBoard when asked."""

    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                dist.print0("train.tensorboard=true but the tensorboard package is not installed; logging JSONL only")

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        record = {"step": step, "split": split, **values}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{split}/{key}", value, step)
