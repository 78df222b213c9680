"""The page a person opens after a run: ``RUN/index.html`` (:func:`write_run_page`), made from
what the run folder holds, and the self-contained HTML pages it and the demo are made of
(:func:`write_page`).

A run's page shows, top to bottom: the training curves (:func:`training_curves`, train and
test on the same window), the latest prediction video and sample grids of ``images/``,
every evaluation under ``eval/`` (its figures from ``eval.json`` and its plots), and the
resolved ``config.yaml`` and ``run.json``. Every section says what its figures compare.
The trainer writes the page again at each evaluation; ``seqvae report RUN`` writes it for
any run folder; ``seqvae demo`` puts its own sections around the same ones.

Everything is read from files (nothing here imports the trainer or a model), paths in the
page are relative to it, and the page needs nothing from the network (no scripts, inline
CSS only).
"""
from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqvae.io import atomic_path, atomic_write_text

PAGE = "index.html"
ASSETS = "report"          # what only the page shows (the curves), beside it in the run folder
_STEP_FILE = re.compile(r"step_(\d+)_(\w+)\.(png|mp4)$")

CSS = """
body{font-family:system-ui,sans-serif;max-width:1400px;margin:1em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
video,img{max-width:100%;height:auto;display:block;margin:.4em 0}
figure{margin:.6em 0 1.2em 0}figcaption,p.what{color:#444;max-width:75em;line-height:1.4}
pre{background:#f4f4f4;padding:.6em;overflow:auto;max-height:30em;font-size:.85em}
table{border-collapse:collapse;font-size:.9em;margin:.4em 0}
td,th{border:1px solid #ddd;padding:.2em .6em;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{flex:0 1 32%;min-width:320px}
.cols{display:flex;flex-wrap:wrap;gap:1em}.cols>div{flex:1 1 40em;min-width:0}
details{margin:.4em 0}
""".strip()


@dataclass
class Figure:
    """An image (PNG) or video (MP4) on a page and the sentence that says what it compares."""

    path: Path
    caption: str = ""


@dataclass
class Section:
    """One part of a page: a heading, a paragraph saying what its figures compare, the
    figures, lines of text shown as they are (``pre``), and tables (``rows`` of cells, the
    first row the header)."""

    heading: str
    what: str = ""
    figures: list[Figure] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    tables: list[list[list[Any]]] = field(default_factory=list)
    raw: list[tuple[str, str]] = field(default_factory=list)   # (summary, text) shown in a <pre> under <details>
    side_by_side: bool = False                                 # figures in a row (small plots)


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{html.escape(str(value))}</td>"
    if isinstance(value, int):
        return f"<td class='n'>{value}</td>"
    if isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:.4g}"
        return f"<td class='n'>{text}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def write_page(path: Path, title: str, sections: list[Section], intro: str = "") -> Path:
    """A self-contained HTML page (inline CSS, no scripts, nothing fetched from the network):
    per section its heading, what it compares, its videos (MP4) and images (PNG) with their
    captions, tables and text. Paths are written relative to the page. Written atomically."""
    path = Path(path)

    def rel(p: Path) -> str:
        return html.escape(Path(os.path.relpath(p, path.parent)).as_posix(), quote=True)

    parts = ["<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if intro:
        parts.append(f"<p class='what'>{html.escape(intro)}</p>")
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        if section.what:
            parts.append(f"<p class='what'>{html.escape(section.what)}</p>")
        if section.side_by_side:
            parts.append("<div class='plots'>")
        for fig in section.figures:
            if fig.path.suffix.lower() == ".mp4":
                media = f"<video src='{rel(fig.path)}' controls loop autoplay muted playsinline></video>"
            else:
                media = f"<img src='{rel(fig.path)}' alt='{html.escape(fig.caption or fig.path.name, quote=True)}'>"
            caption = f"<figcaption>{html.escape(fig.caption)}</figcaption>" if fig.caption else ""
            parts.append(f"<figure>{media}{caption}</figure>")
        if section.side_by_side:
            parts.append("</div>")
        for table in section.tables:
            if not table:
                continue
            head, *body = table
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>")
            parts += ["<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in body]
            parts.append("</table>")
        if section.lines:
            parts.append("<pre>" + html.escape("\n".join(section.lines)) + "</pre>")
        if section.raw:
            parts.append("<div class='cols'>")
            for summary, text in section.raw:
                parts.append(f"<div><details open><summary>{html.escape(summary)}</summary>"
                             f"<pre>{html.escape(text)}</pre></details></div>")
            parts.append("</div>")
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts) + "\n")


# ---------------------------------------------------------------------------------------------
# What a run folder holds
# ---------------------------------------------------------------------------------------------


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (a line cut by a kill, or not an object, is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record and "split" in record:
            records.append(record)
    return records


def _finite(records: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    out = []
    for r in records:
        value = r.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append((int(r["step"]), float(value)))
    return out


def _config_frames(run_dir: Path) -> tuple[int | None, int | None]:
    """Frames per training example and per test sequence from ``config.yaml``
    (``data.seq_len``, ``data.eval_seq_len``), where it says."""
    text = _read_text(Path(run_dir) / "config.yaml")
    found = [re.search(rf"^\s+{key}:\s*(\d+)", text, re.M) for key in ("seq_len", "eval_seq_len")]
    return tuple(int(m.group(1)) if m else None for m in found)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def training_curves(run_dir: Path, out: Path) -> Path | None:
    """The bound in bits/dim, train and test on comparable terms, and the decoder's σ, one PNG
    (None when the run has no metrics yet).

    * **the bound on the training window**: each training batch's −ELBO (its own windows of
      ``data.seq_len`` frames; with an optimal-σ decoder, σ* of that batch) beside the test
      split's bound over the first frames of each test sequence, as many as a training
      window has (``bpd_window``; EMA σ). A run logged before that figure existed shows its
      whole-sequence test bound instead, labelled as not the same window.
    * **per frame** (videos): the test split's bits/dim of each frame at each evaluation,
      the frames inside the training window shaded.
    * **σ**: the batch σ* and the EMA σ used at test.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    records = read_metrics(run_dir)
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test"]
    if not train and not test:
        return None
    per_frame = [(int(r["step"]), r["bpd_per_frame"]) for r in test if isinstance(r.get("bpd_per_frame"), list)]
    train_frames, test_frames = _config_frames(run_dir)
    window = next((int(r["window_frames"]) for r in reversed(test) if "window_frames" in r), None) or train_frames
    full_frames = next((int(r["frames"]) for r in reversed(test) if "frames" in r), None) or test_frames
    panels = 3 if per_frame else 2
    fig = MplFigure(figsize=(4.6 * panels, 4.4))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]

    ax = axes[0]
    windowed = _finite(test, "bpd_window")
    video = window is not None
    train_label = f"train batches ({window} frames)" if video else "train batches"
    if train:
        ax.plot(*zip(*_finite(train, "bpd")), color="tab:blue", lw=1, alpha=0.7, label=train_label + ", as trained")
    scored = _finite([r for r in records if r["split"] == "train_eval"], "bpd")
    if scored:
        ax.plot(*zip(*scored), "s-", color="tab:blue", label=train_label + ", scored as test")
    if windowed:
        ax.plot(*zip(*windowed), "o-", color="tab:red", label=f"test, its first {window} frames")
    whole = _finite(test, "bpd")
    if whole and (not windowed or (full_frames or 0) > (window or 0)):
        if windowed or not video:
            label = f"test, whole sequences ({full_frames} frames)" if video else "test split"
            style = dict(ls="--", color="tab:gray") if windowed else dict(color="tab:red")
        elif full_frames == window:   # logged before the windowed figure, but the test sequences are the window
            label = f"test ({full_frames} frames, as many as a training window)"
            style = dict(color="tab:red")
        else:   # logged before the windowed figure: say that the windows differ
            label = f"test, whole sequences ({full_frames or '?'} frames: not the training window)"
            style = dict(ls="--", color="tab:gray")
        ax.plot(*zip(*whole), marker="o", label=label, **style)
    ax.set_xlabel("step")
    ax.set_ylabel("−ELBO (bits / dim)")
    same_window = windowed or (video and full_frames == window)
    ax.set_title("the bound, train vs test" + (" (same window)" if same_window else ""))

    if per_frame:
        ax = axes[1]
        shown = per_frame[-4:]
        for i, (step, values) in enumerate(shown):
            latest = i == len(shown) - 1
            frames = list(range(2, 2 + len(values)))
            ax.plot(frames, values, "o-" if latest else "-", ms=3, color="tab:red",
                    alpha=1.0 if latest else 0.25 + 0.5 * i / max(len(shown) - 1, 1), label=f"test, step {step}")
        if window:
            ax.axvspan(1.5, window + 0.5, color="tab:blue", alpha=0.08, label=f"training window (frames ≤ {window})")
        ax.set_xlabel("frame (frame 1 is given)")
        ax.set_ylabel("bits / dim of that frame")
        ax.set_title("the test bound per frame")

    ax = axes[-1]
    sigma = _finite(train, "sigma")
    if sigma:
        ax.plot(*zip(*sigma), color="tab:blue", lw=1, label="σ* of the training batch")
    ema = _finite(test, "sigma_ema")
    if ema:
        ax.plot(*zip(*ema), "o-", color="tab:red", label="σ used at test (EMA)")
    if sigma or ema:
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "this decoder has no single σ", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("decoder σ (pixel units, [0, 1])")
    ax.set_title("the decoder's σ")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:   # under the plot, where it hides no line
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.17), frameon=False)
    # a fixed layout (tight_layout costs a second draw of every axis; the trainer writes this often)
    fig.subplots_adjust(left=0.07 if panels == 3 else 0.1, right=0.98, top=0.92, bottom=0.38, wspace=0.3)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return out


def curves_caption(run_dir: Path) -> str:
    """What :func:`training_curves` compares, in words, with this run's frame counts."""
    test = [r for r in read_metrics(run_dir) if r["split"] == "test"]
    window = next((int(r["window_frames"]) for r in reversed(test) if "window_frames" in r), None)
    frames = next((int(r["frames"]) for r in reversed(test) if "frames" in r), None)
    train_frames, test_frames = _config_frames(run_dir)
    scored = any(r["split"] == "train_eval" for r in read_metrics(run_dir))
    text = ("Left: the bound in bits per dimension (lower is better). The thin blue line is each training "
            "batch's bound as the training step computed it (train mode; with an optimal-σ decoder, the batch's "
            "own σ*), logged every train.log_every steps")
    if scored:
        text += ("; the blue squares are the training batch of each evaluation step scored as the test split is "
                 "(eval mode: running statistics and the σ used at test)")
    if window:
        text += (f". The red dots are the test split's bound over the first {window} frames of each test sequence, "
                 f"as many frames as a training window has, so "
                 + ("squares and dots differ only in the data: their gap is what the model does not carry over to "
                    "unseen sequences, while the gap between the thin line and the squares comes from scoring "
                    "(σ*, batch statistics), not from the data" if scored else
                    "the lines compare over the same window")
                 )
        if frames and frames > window:
            text += (f". The grey dashed line is the test bound over whole {frames}-frame sequences: later frames "
                     "cost more (more has moved, and the recurrent state runs beyond the length it was trained on), "
                     "so that line is not comparable with the training line")
        text += (". Middle: the test bound of each frame at the latest evaluations (faint: earlier ones); the "
                 "shaded frames are those a training window covers")
    elif not test:
        text += (" (no test evaluation yet: the trainer scores the test split every train.eval_every steps and at "
                 "the end)")
    elif train_frames and (frames or test_frames) == train_frames:   # the same fallback as the figure's
        text += (f" over {train_frames}-frame windows; the red dots score the test split's {test_frames}-frame "
                 "sequences, as many frames as a training window has, so the lines compare over the same window")
    elif train_frames:
        length = f"{test_frames}-frame" if test_frames else "whole"
        text += (f" over {train_frames}-frame windows; the dashed test line scores {length} test sequences, a "
                 "different window from the training batches' (this run was logged before the windowed test figure "
                 "existed): do not read the gap between them as overfitting")
    else:
        text += "; the red dots are the test split's bound"
    text += (". Right: the decoder's σ — each training batch's optimal σ* and the running average used at test "
             "(paper App. C).")
    return text


def _latest(folder: Path, kind: str, suffix: str) -> list[Path]:
    """``folder/step_*_<kind>.<suffix>`` files, by step."""
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _STEP_FILE.fullmatch(p.name)
            if m and m.group(2) == kind and m.group(3) == suffix:
                found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def _step_of(path: Path) -> int:
    m = _STEP_FILE.fullmatch(path.name)
    return int(m.group(1)) if m else -1


def evaluation_folders(run_dir: Path) -> list[Path]:
    """Every ``eval/*`` folder of the run with an ``eval.json`` or plots, oldest first."""
    root = Path(run_dir) / "eval"
    if not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if p.is_dir() and ((p / "eval.json").is_file() or any(p.glob("*.png")))]
    return sorted(folders, key=lambda p: ((p / "eval.json").stat().st_mtime if (p / "eval.json").is_file()
                                          else p.stat().st_mtime, p.name))


PLOT_CAPTIONS = {
    "psnr": "PSNR per predicted frame (higher is better)",
    "ssim": "SSIM per predicted frame (higher is better)",
    "lpips": "LPIPS per predicted frame (lower is better)",
}


def evaluation_section(folder: Path) -> Section:
    """One evaluation: what was run, its figures (``eval.json``) and its plots."""
    record: dict[str, Any] = {}
    try:
        record = json.loads((folder / "eval.json").read_text())
    except (OSError, ValueError):
        pass
    results = record.get("results", {}) if isinstance(record.get("results"), dict) else {}
    settings = record.get("settings") if isinstance(record.get("settings"), dict) else None
    step = record.get("step", results.get("step"))
    heading = f"Evaluation {folder.name}" + (f" (step {step}, {record.get('split', 'test')} split)"
                                             if step is not None else "")
    what = []
    if record.get("command"):
        what.append(f"Made by: {record['command']}.")
    if settings:
        what.append(f"{settings.get('sequences')} sequences, {settings.get('samples')} sampled futures each, "
                    f"{settings.get('context_frames')} context → {settings.get('predicted_frames')} predicted frames.")
    plots = sorted(folder.glob("*.png"))
    if plots:
        what.append("Each plot is one frame metric against the frame number of the predicted frames: the model's "
                    "best of N samples per sequence (the sample closest to the truth), the copy-last-context-frame "
                    "baseline (a model that predicts no motion), and, shaded, the mean ± 1 s.d. of all samples; "
                    "bands are ±1 standard error over sequences.")
    if results:
        parts = (["the −log p bound (nats per example, bits/dim) with its NLL and KL"] if "bpd" in results else [])
        parts += ["the decoder's σ"] if any(k.startswith("sigma") for k in results) else []
        parts += ["the video metrics of the sampled futures (best of N and the copy-last-frame baseline)"
                  if any(k.endswith("_mean") for k in results) else "the other figures"]
        what.append("The table lists every figure of eval.json: " + ", ".join(parts) + ".")
    rows: list[list[Any]] = [["figure", "value"]]
    for key, value in results.items():
        if isinstance(value, (list, dict)):
            continue
        rows.append([key, value])
    figures = [Figure(p, PLOT_CAPTIONS.get(p.stem, p.stem)) for p in plots]
    figures += [Figure(p, p.stem) for p in sorted(folder.glob("*.mp4"))]
    return Section(heading, " ".join(what), figures=figures, tables=[rows] if len(rows) > 1 else [],
                   side_by_side=True)


def run_sections(run_dir: Path, assets: Path | None = None) -> list[Section]:
    """The sections of a run's page (see the module); the curves PNG goes to ``assets``
    (default ``RUN/report/``)."""
    run_dir = Path(run_dir)
    assets = Path(assets) if assets is not None else run_dir / ASSETS
    sections: list[Section] = []
    records = read_metrics(run_dir)
    curves = training_curves(run_dir, assets / "training.png") if records else None
    last = max((int(r["step"]) for r in records), default=None)
    if curves is not None:
        sections.append(Section(f"Training curves (up to step {last})", curves_caption(run_dir),
                                figures=[Figure(curves)]))
    else:
        sections.append(Section("Training curves", "No metrics.jsonl yet: the run has not logged a step."))
    images = run_dir / "images"
    videos = _latest(images, "predictions", "mp4")
    samples, recon = _latest(images, "samples", "png"), _latest(images, "reconstructions", "png")
    figures = []
    if videos:
        figures.append(Figure(videos[-1], f"step {_step_of(videos[-1])}: held-out test sequences, each as the truth "
                                          "(grey, 'gt') beside samples predicted from its first frames (green, "
                                          "'ctx': given; red, 'pred': predicted)"))
    if samples:
        figures.append(Figure(samples[-1], f"step {_step_of(samples[-1])}: a training batch — each sequence's truth "
                                           "above a sample predicted from its context frames (images: samples "
                                           "from the prior)"))
    if recon:
        figures.append(Figure(recon[-1], f"step {_step_of(recon[-1])}: the same batch's truth and its "
                                         "reconstruction through the posterior (the model sees every frame)"))
    earlier = [p for p in [*videos[:-1], *samples[:-1], *recon[:-1]]]
    sections.append(Section("Latest predictions and samples",
                            "What the model makes of sequences, at the latest figure step. Predictions and "
                            "samples come from the learned prior; reconstructions from the posterior, which "
                            "sees the frames it reconstructs — so reconstructions look better than predictions."
                            if figures else "No figures yet (train.image_every).", figures=figures,
                            lines=[f"earlier: {os.path.relpath(p, run_dir)}" for p in earlier[-12:]]))
    for folder in evaluation_folders(run_dir):
        sections.append(evaluation_section(folder))
    raw = []
    for name in ("config.yaml", "run.json"):
        text = _read_text(run_dir / name)
        if text:
            if name.endswith(".json"):
                try:
                    text = json.dumps(json.loads(text), indent=2)
                except ValueError:
                    pass
            raw.append((name, text))
    sections.append(Section("Configuration", "config.yaml is the resolved config the run trained with (what "
                                             "--resume continues); run.json what the process ran with: device, "
                                             "precision, threads, torch.", raw=raw))
    return sections


def write_run_page(run_dir: Path, out: Path | None = None, title: str | None = None,
                   before: list[Section] | tuple[Section, ...] = (), after: list[Section] | tuple[Section, ...] = (),
                   intro: str = "") -> Path:
    """Write the page of the run in ``run_dir`` to ``out`` (default ``RUN/index.html``), with
    ``before``/``after`` sections around the run's own (the demo's videos and figures).
    Returns the page's path."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / PAGE
    records = read_metrics(run_dir)
    last = max((int(r["step"]) for r in records), default=None)
    title = title or f"seqvae run {run_dir.name}"
    if not intro:
        intro = f"Run folder {run_dir}" + (f", step {last}" if last is not None else "") + \
            ". Written by the trainer at each evaluation and by `seqvae report`."
    return write_page(out, title, [*before, *run_sections(run_dir, out.parent / ASSETS if out.parent != run_dir
                                                          else None), *after], intro)


def referenced_files(page: Path) -> list[Path]:
    """The local files a page's ``src`` and ``href`` attributes point at (for checks)."""
    text = Path(page).read_text()
    refs = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", text)
    return [Path(page).parent / html.unescape(r) for r in refs if "://" not in r and not r.startswith("#")]
