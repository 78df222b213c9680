#!/usr/bin/env python
"""Throughput of the BAIR training loader (frames per second) at 0, 1 and 2 workers.

    python tools/bench_bair_loader.py                       # synthetic data in a temp dir
    python tools/bench_bair_loader.py --root datasets/bair  # the real training files
    python tools/bench_bair_loader.py --sequences 512 --workers 0 1 2 4 --batch-size 16

Without ``--root`` it writes ``--sequences`` random 30-step sequences in the original
TFRecord format (``--files`` files) to a temporary folder, removed afterwards. Each row
times one pass over up to ``--batches`` batches of ``seq_len``-frame windows: the first
batch (worker start-up included) separately, then the steady rate.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from seqvae.data.bair import BairTrainDataset, bair_files, write_bair_records


def write_synthetic(folder: Path, sequences: int, files: int, seed: int = 0) -> list[Path]:
    """Write ``sequences`` random sequences spread over ``files`` TFRecord files."""
    rng = np.random.default_rng(seed)
    paths = []
    for k, ids in enumerate(np.array_split(np.arange(sequences), files)):
        n = len(ids)
        path = folder / f"traj_{ids[0]}_to_{ids[-1]}.tfrecords"
        write_bair_records(path, rng.integers(0, 256, (n, 30, 64, 64, 3), dtype=np.uint8),
                           rng.standard_normal((n, 30, 4)).astype(np.float32),
                           rng.standard_normal((n, 30, 3)).astype(np.float32))
        paths.append(path)
    return paths


def bench(files: list[Path], workers: int, batch_size: int, seq_len: int, max_batches: int) -> dict:
    """Time one pass of the training loader; returns the row of the table."""
    t0 = time.perf_counter()
    ds = BairTrainDataset(files, seq_len)
    index_s = time.perf_counter() - t0
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    first = None
    frames = batches = 0
    for batch in loader:
        if first is None:
            first = time.perf_counter() - start
            steady_start = time.perf_counter()
        else:
            frames += batch["frames"].shape[0] * batch["frames"].shape[1]
        batches += 1
        if batches >= max_batches:
            break
    steady = time.perf_counter() - steady_start
    return {"workers": workers, "index_s": index_s, "first_s": first, "batches": batches,
            "frames_per_s": frames / steady if steady > 0 and frames else float("nan"),
            "seq_per_s": frames / seq_len / steady if steady > 0 and frames else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="BAIR root with softmotion30_44k/ (default: synthetic data)")
    parser.add_argument("--sequences", type=int, default=256, help="synthetic sequences to write")
    parser.add_argument("--files", type=int, default=4, help="synthetic files to spread them over")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=12, help="frames per training window")
    parser.add_argument("--batches", type=int, default=1000, help="at most this many batches per row")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bair_bench_") as tmp:
        if args.root is not None:
            files = bair_files(args.root, "train")
            source = f"{args.root} ({len(files)} train files)"
        else:
            t0 = time.perf_counter()
            files = write_synthetic(Path(tmp), args.sequences, args.files)
            mb = sum(f.stat().st_size for f in files) / 2**20
            source = (f"synthetic: {args.sequences} sequences in {args.files} files, {mb:.0f} MiB, "
                      f"written in {time.perf_counter() - t0:.1f} s")
        print(f"BAIR training loader — {source}")
        print(f"batch {args.batch_size}, seq_len {args.seq_len}, {os.cpu_count()} CPUs, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
        print(f"{'workers':>7} {'index s':>8} {'1st batch s':>11} {'batches':>7} {'seq/s':>8} {'frames/s':>9}")
        for workers in args.workers:
            row = bench(files, workers, args.batch_size, args.seq_len, args.batches)
            print(f"{row['workers']:>7} {row['index_s']:>8.3f} {row['first_s']:>11.3f} {row['batches']:>7} "
                  f"{row['seq_per_s']:>8.0f} {row['frames_per_s']:>9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
