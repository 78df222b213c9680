"""Named video-evaluation protocols (``seqvae eval --protocol NAME``), each with its source.

Published BAIR numbers are comparable only at equal context, horizon, sample counts and
FVD clip layout; a protocol fixes them:

``default``
    The model's own context (``n_past``) and horizon (``n_eval``), best of ``--samples`` per
    sequence over ``--sequences`` test sequences for PSNR/SSIM (LPIPS with ``--lpips``), FVD
    only with ``--fvd``. Best-of-N as in Denton & Fergus 2018 (SVG), §5. Told nothing, best of
    20 over 128 sequences (``seqvae.cli.evaluate``): minutes on a CPU for a demo-sized model,
    and lower than a best of 100.
``svg`` / ``srvp``
    2 context frames → 28 predicted (30-frame BAIR test sequences), best of 100 samples per
    sequence for PSNR, SSIM and LPIPS with per-step curves (Denton & Fergus 2018, §5; Franceschi
    et al. 2020, SRVP, §5 and its ``test.py``), 256 test sequences (the BAIR test set), and
    FVD of (context + one random sample) against (context + truth) over those sequences, as
    SRVP's ``test.py`` computes it.
``videogpt``
    1 context frame → 15 predicted (16-frame clips), 256 test clips × 100 samples, FVD only,
    context frame included (Yan et al. 2021, VideoGPT, §4.1 and ``scripts/compute_fvd.py``;
    FitVid, Babaeizadeh et al. 2021, and iVideoGPT report BAIR the same way). FVD is computed
    for each of the 100 sample sets against the 256 true clips: mean ± std, and pooled.

A protocol's counts can be lowered (``--samples``, ``--sequences``) for a quick look; the
evaluation's JSON then records the deviation, and the numbers are not the protocol's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Protocol:
    name: str
    summary: str
    source: str
    n_ctx: int | None = None          # context frames (None: the model's n_past)
    n_future: int | None = None       # predicted frames (None: the model's n_eval)
    samples: int | None = None        # samples per sequence (None: --samples)
    sequences: int | None = None      # test sequences (None: --sequences)
    frame_metrics: bool = True        # best-of-N PSNR / SSIM (/ LPIPS)
    lpips: bool | None = None         # None: --lpips decides
    fvd: bool | None = None           # None: --fvd decides
    fvd_samples: int = 1              # sample sets scored by FVD
    fvd_context: bool = True          # FVD clips start with the context frames

    def as_dict(self) -> dict:
        return asdict(self)


PROTOCOLS: dict[str, Protocol] = {
    "default": Protocol(
        "default", "the model's own context and horizon; best of --samples over --sequences; FVD with --fvd",
        "seqvae; best-of-N selection of Denton & Fergus 2018 (SVG), §5"),
    "svg": Protocol(
        "svg", "2 context -> 28 predicted, best of 100 for PSNR/SSIM/LPIPS, FVD of context + 1 sample",
        "Denton & Fergus 2018 (SVG), §5 (BAIR: 2 -> 28, best of 100); FVD as SRVP's test.py "
        "(Franceschi et al. 2020): context + one random sample vs context + truth",
        n_ctx=2, n_future=28, samples=100, sequences=256, lpips=True, fvd=True),
    "srvp": Protocol(
        "srvp", "2 context -> 28 predicted, best of 100 for PSNR/SSIM/LPIPS, FVD of context + 1 sample",
        "Franceschi et al. 2020 (SRVP), §5 and test.py: BAIR 2 -> 28, best of 100, FVD of context + one random "
        "sample vs context + truth over the 256 test sequences",
        n_ctx=2, n_future=28, samples=100, sequences=256, lpips=True, fvd=True),
    "videogpt": Protocol(
        "videogpt", "1 context -> 15 predicted, 256 clips x 100 samples, FVD only (context included)",
        "Yan et al. 2021 (VideoGPT), §4.1 and scripts/compute_fvd.py; as reported by FitVid (Babaeizadeh et al. "
        "2021) and iVideoGPT: 16-frame clips, 1 context frame, 256 test clips x 100 samples",
        n_ctx=1, n_future=15, samples=100, sequences=256, frame_metrics=False, lpips=False, fvd=True,
        fvd_samples=100),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
