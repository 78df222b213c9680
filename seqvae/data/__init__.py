"""Data sets: every loader yields {"frames": uint8 [T, C, H, W], ...} items (see spec.py)."""
