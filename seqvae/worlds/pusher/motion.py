"""Do predicted objects move? Colour-tracked object displacement in predicted pusher videos.

PSNR and SSIM hardly notice whether a video predictor moves the few hundred pixels of a
pushed object: a model that leaves every object where it was in the last context frame
scores almost as well as one that pushes them. On the embedded pushing world the objects'
colours and true positions are known, so each object can be tracked by its colour
(:func:`seqvae.worlds.pusher.tracking.locate_color`, frame by frame, starting from its true position in
the last context frame) in every predicted sample, and its travel compared with the truth.

``object_motion`` reports, over the objects that really move during the predicted frames,
their mean true displacement, the mean displacement the samples predict, and the best
sample's final-position error — to be read against the error of "the object stays", which
is the true displacement itself. The same tracker run on the ground-truth frames gives its
own accuracy (``tracker_error``), the floor of the final-position error.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from seqvae.evaluation.video import VideoMetric, run_video_metrics
from seqvae.worlds.pusher.tracking import locate_color


@dataclass
class ObjectMotion:
    objects: int                   # objects present, over all sequences
    moving: int                    # of which truly move more than the threshold over the predicted frames
    true_displacement: float       # their mean true displacement, last context -> last predicted frame (table units)
    predicted_displacement: float  # their mean tracked displacement in the samples (mean over samples)
    best_error: float              # their mean final-position error of the best sample
                                   # (the object staying: true_displacement)
    still_predicted_displacement: float  # objects that do not move: mean tracked displacement in the samples
    tracker_error: float           # all objects: final-position error of tracking the ground truth
                                   # (the tracker's floor)

    def summary(self) -> dict[str, float | int | None]:
        """The fields as a JSON-safe dict (``None`` where no object qualified)."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


def track_objects(video: Tensor, colors: Tensor, start: Tensor) -> Tensor:
    """Positions ``[..., F, K, 2]`` of K coloured objects in ``video [..., F, 3, H, W]``,
    given their colours ``colors [..., K, 3]`` and positions ``start [..., K, 2]`` just before
    the first frame; each frame's estimate is the next frame's prior."""
    tracks = []
    for k in range(colors.shape[-2]):
        position, path = start[..., k, :], []
        for t in range(video.shape[-4]):
            position = locate_color(video[..., t, :, :, :], colors[..., k, :], prior=position)
            path.append(position)
        tracks.append(torch.stack(path, -2))                                   # [..., F, 2]
    return torch.stack(tracks, -2)                                             # [..., F, K, 2]


def per_object_motion(samples: Tensor, truth: Tensor, object_pos: Tensor, object_mask: Tensor,
                      object_color: Tensor) -> dict[str, Tensor]:
    """Per-object travel, ``[B, K]`` each: ``true`` displacement, ``predicted`` (mean over
    samples), ``best_error`` (the best sample's final-position error), ``tracker_error``
    (tracking the true frames) and ``mask`` (which objects exist).

    Args:
        samples: predicted frames ``[S, B, F, 3, H, W]`` in [0, 1].
        truth: the true frames ``[B, F, 3, H, W]`` at the same steps.
        object_pos: true positions ``[B, F + 1, K, 2]``: the last context frame, then the F
            predicted steps.
        object_mask: ``[B, K]`` which object slots exist.
        object_color: ``[B, K, 3]`` their colours in [0, 1].
    """
    S, B, F = samples.shape[:3]
    if truth.shape[:2] != (B, F) or object_pos.shape[:2] != (B, F + 1):
        raise ValueError(f"object_motion: samples {tuple(samples.shape)}, truth {tuple(truth.shape)} and "
                         f"object_pos {tuple(object_pos.shape)} disagree (object_pos needs the last context "
                         f"frame and the {F} predicted steps)")
    start, final = object_pos[:, 0].float(), object_pos[:, -1].float()            # [B, K, 2]
    colors = object_color.float()
    tracked_truth = track_objects(truth.float(), colors, start)[:, -1]             # [B, K, 2]
    tracked = track_objects(samples.float(), colors.expand(S, *colors.shape),
                            start.expand(S, *start.shape))[:, :, -1]               # [S, B, K, 2]
    return {"true": (final - start).norm(dim=-1),
            "predicted": (tracked - start).norm(dim=-1).mean(0),
            "best_error": (tracked - final).norm(dim=-1).min(0).values,
            "tracker_error": (tracked_truth - final).norm(dim=-1),
            "mask": object_mask.bool()}


def summarize_motion(per_object: dict[str, Tensor], threshold: float = 0.15) -> ObjectMotion:
    """:class:`ObjectMotion` of :func:`per_object_motion` results (an object "moves" when its
    true displacement exceeds ``threshold`` table units)."""
    mask = per_object["mask"]
    moving, still = mask & (per_object["true"] > threshold), mask & (per_object["true"] <= threshold)

    def mean(name: str, where: Tensor) -> float:
        return float(per_object[name][where].mean()) if bool(where.any()) else float("nan")

    return ObjectMotion(objects=int(mask.sum()), moving=int(moving.sum()),
                        true_displacement=mean("true", moving), predicted_displacement=mean("predicted", moving),
                        best_error=mean("best_error", moving), still_predicted_displacement=mean("predicted", still),
                        tracker_error=mean("tracker_error", mask))


def object_motion(samples: Tensor, truth: Tensor, object_pos: Tensor, object_mask: Tensor,
                  object_color: Tensor, threshold: float = 0.15) -> ObjectMotion:
    """Compare the predicted with the true travel of every object (arguments as in
    :func:`per_object_motion`)."""
    return summarize_motion(per_object_motion(samples, truth, object_pos, object_mask, object_color), threshold)


class ObjectMotionMetric(VideoMetric):
    """:func:`object_motion` as a video metric fed batch by batch and in chunks of samples
    (registered for the ``pusher`` data set, so ``seqvae eval`` and the demo report it on their
    own samples): the truth is tracked once per batch; per object it keeps the running sum of
    the samples' displacements and the running minimum of their final-position errors."""

    name = "object_motion"

    def __init__(self, threshold: float = 0.15) -> None:
        self.threshold = threshold
        self.parts: dict[str, list[Tensor]] = {}

    def start_batch(self, batch: dict[str, Tensor], n_ctx: int, n_future: int) -> None:
        missing = [k for k in ("object_pos", "object_mask", "object_color") if k not in batch]
        if missing:
            raise ValueError(f"object motion needs items with object_pos, object_mask and object_color "
                             f"(the embedded pusher data set); these lack {', '.join(missing)}")
        pos = batch["object_pos"][:, n_ctx - 1:n_ctx + n_future].float()
        self.start, self.final = pos[:, 0], pos[:, -1]                                   # [B, K, 2]
        self.colors = batch["object_color"].float()
        tracked_truth = track_objects(batch["frames"][:, n_ctx:n_ctx + n_future].float(), self.colors, self.start)
        self.batch = {"true": (self.final - self.start).norm(dim=-1),
                      "tracker_error": (tracked_truth[:, -1] - self.final).norm(dim=-1),
                      "mask": batch["object_mask"].bool()}
        self.moved_sum = torch.zeros_like(self.batch["true"])
        self.best_error = torch.full_like(self.batch["true"], float("inf"))
        self.count = 0

    def update(self, samples: Tensor, first: int) -> None:
        s = samples.shape[0]
        tracked = track_objects(samples.float().clamp(0, 1), self.colors.expand(s, *self.colors.shape),
                                self.start.expand(s, *self.start.shape))[:, :, -1]      # [s, B, K, 2]
        self.moved_sum += (tracked - self.start).norm(dim=-1).sum(0)
        self.best_error = torch.minimum(self.best_error, (tracked - self.final).norm(dim=-1).min(0).values)
        self.count += s

    def end_batch(self) -> None:
        per = {**self.batch, "predicted": self.moved_sum / self.count, "best_error": self.best_error}
        for name, value in per.items():
            self.parts.setdefault(name, []).append(value.cpu())

    def result(self) -> ObjectMotion:
        if not self.parts:
            raise ValueError("object motion: no batch was evaluated")
        return summarize_motion({name: torch.cat(values) for name, values in self.parts.items()}, self.threshold)

    def summary(self) -> dict[str, float | int | None]:
        return self.result().summary()

    def report(self) -> list[str]:
        m = self.result()
        return [f"{m.moving} of {m.objects} objects move > {self.threshold:g} table units in the truth (mean "
                f"{m.true_displacement:.2f}); the samples move them {m.predicted_displacement:.2f} "
                f"(objects that stay: {m.still_predicted_displacement:.2f})",
                f"best sample's final object position is off by {m.best_error:.2f} vs "
                f"{m.true_displacement:.2f} if they stayed put (colour tracker; its floor {m.tracker_error:.2f})"]


@torch.no_grad()
def evaluate_object_motion(model, dataset, *, n_samples: int = 16, n_sequences: int = 32, batch_size: int = 8,
                           device: torch.device, precision: str = "auto", threshold: float = 0.15,
                           seed: int = 0) -> ObjectMotion:
    """:func:`object_motion` of ``n_samples`` futures of the first ``n_sequences`` sequences
    of a pusher evaluation split, ``batch_size`` sequences at a time."""
    metric = ObjectMotionMetric(threshold)
    run_video_metrics(model, dataset, [metric], n_samples=n_samples, n_sequences=n_sequences, batch_size=batch_size,
                      device=device, precision=precision, seed=seed)
    return metric.result()
