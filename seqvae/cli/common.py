"""What several commands share: the default device and the precision choices."""
from __future__ import annotations

import torch

DEFAULT_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
