"""Pages and plots a person opens after a run: training curves from ``metrics.jsonl`` and a
self-contained ``index.html`` of videos, images and figures."""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

from seqvae.io import atomic_path, atomic_write_text


def training_curves(run_dir: Path, out: Path) -> Path:
    """The bound (bits/dim, train and test) and σ against the step, one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test"]
    fig = Figure(figsize=(9, 3.4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot([r["step"] for r in train], [r["bpd"] for r in train], label="train batch")
    ax1.plot([r["step"] for r in test], [r["bpd"] for r in test], "o-", label="test split")
    ax1.set_xlabel("step")
    ax1.set_ylabel("−ELBO (bits / dim)")
    ax1.set_title("the bound falls")
    ax1.legend()
    sigma = [(r["step"], r["sigma"]) for r in train if "sigma" in r]
    if sigma:
        ax2.plot(*zip(*sigma), label="σ* of the batch")
    ema = [(r["step"], r["sigma_ema"]) for r in test if "sigma_ema" in r]
    if ema:
        ax2.plot(*zip(*ema), "o-", label="σ used at test (EMA)")
    ax2.set_yscale("log")
    ax2.set_xlabel("step")
    ax2.set_ylabel("decoder σ (pixel units, [0, 1])")
    ax2.set_title("the decoder calibrates itself (β = 1)")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return out


def write_index(path: Path, title: str, sections: list[tuple[str, list[Path], list[str]]]) -> Path:
    """``index.html``: per section a heading, its videos (MP4) / images (PNG) and lines of
    text (figures); paths are written relative to the page."""
    def rel(p: Path) -> str:
        return html.escape(os.path.relpath(p, path.parent))

    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1400px;margin:1em auto} video,img{max-width:100%}"
             " pre{background:#f4f4f4;padding:.6em}</style>", f"<h1>{html.escape(title)}</h1>"]
    for heading, media, lines in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for m in media:
            if m.suffix.lower() == ".mp4":
                parts.append(f"<p><video src='{rel(m)}' controls loop autoplay muted></video></p>")
            else:
                parts.append(f"<p><img src='{rel(m)}' alt='{html.escape(m.name)}'></p>")
        if lines:
            parts.append("<pre>" + html.escape("\n".join(lines)) + "</pre>")
    return atomic_write_text(path, "\n".join(parts) + "\n")
