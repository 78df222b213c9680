#!/usr/bin/env python
"""Where a pusher model's object travel is lost: the gripper's path or the push itself.

    python tools/pusher_contact.py --pretrained pusher                  (validation split)
    python tools/pusher_contact.py runs/pusher_cpu64 --split test --samples 16
    python tools/pusher_contact.py --pretrained pusher --truth          (the tracker on the true frames)

``seqvae eval`` reports how far predicted objects travel (seqvae.worlds.pusher.motion). This
splits that figure in two, over the predicted frames of the first ``--sequences`` sequences:

* the gripper: how far it travels (last context frame -> last predicted frame), tracked by
  the colour of its dark inside in every sample, against its true travel;
* the push: an object counts as *reached* when the gripper comes within reach of it (the
  gripper's and the object's radii plus ``--margin``, from its place in the last context
  frame); the share of objects reached, and how far the reached objects travel, in the
  samples and in the truth.

A model that moves its gripper as far as the truth but whose reached objects travel less
renders the push badly; one whose gripper travels less does not know where the gripper goes.
``--truth`` runs the same tracking on the true frames: its figures should equal the truth's
(the tracker's own error).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from seqvae.build import build_data
from seqvae.cli import USER_ERRORS, user_message
from seqvae.evaluation.video import eval_batches, eval_mode, future_chunks
from seqvae.loading import load_model, model_source
from seqvae.worlds.pusher.motion import track_objects
from seqvae.worlds.pusher.world import GRIPPER_INNER


@dataclass
class Contact:
    sequences: int
    samples: int
    gripper_travel_true: float       # mean over sequences, table units
    gripper_travel_predicted: float  # mean over sequences and samples
    reached_true: float              # share of the objects present that the true gripper reaches
    reached_predicted: float         # the same over samples
    reached_travel_true: float       # mean travel of the objects the true gripper reaches
    reached_travel_predicted: float  # mean travel of the objects a sample's gripper reaches, in that sample
    unreached_travel_predicted: float  # ... and of those it does not reach


def _paths(batch: dict[str, Tensor], n_ctx: int, n_future: int) -> tuple[Tensor, Tensor, Tensor]:
    """True gripper ``[B, F + 1, 2]`` and object ``[B, F + 1, K, 2]`` positions from the last
    context frame on, and which objects exist ``[B, K]``."""
    grip = batch["gripper_pos"][:, n_ctx - 1:n_ctx + n_future].float()
    objects = batch["object_pos"][:, n_ctx - 1:n_ctx + n_future].float()
    return grip, objects, batch["object_mask"].bool()


def true_parts(batch: dict[str, Tensor], n_ctx: int, n_future: int, reach: float) -> dict[str, Tensor]:
    """Sums over a batch of the true gripper's travel, the objects present, those it reaches
    and their travel."""
    grip, objects, mask = _paths(batch, n_ctx, n_future)
    start = objects[:, 0]                                                             # [B, K, 2]
    reached = ((grip[:, 1:, None] - start[:, None]).norm(dim=-1).min(1).values < reach) & mask
    travel = (objects[:, -1] - start).norm(dim=-1)                                     # [B, K]
    return {"gripper_true": (grip[:, -1] - grip[:, 0]).norm(dim=-1).sum(), "objects": mask.sum() * 1.0,
            "reached_true": reached.sum() * 1.0, "reached_travel_true": travel[reached].sum()}


def sample_parts(samples: Tensor, batch: dict[str, Tensor], n_ctx: int, reach: float) -> dict[str, Tensor]:
    """Sums over ``samples [S, B, F, 3, H, W]`` (in [0, 1], predicted after ``n_ctx`` context
    frames of a pusher ``batch``) of the tracked gripper's travel, the objects it reaches and
    the tracked travel of the objects reached and not reached."""
    s, f = samples.shape[0], samples.shape[2]
    samples = samples.float()
    grip, objects, mask = _paths(batch, n_ctx, f)
    inner = torch.tensor(GRIPPER_INNER, device=samples.device).expand(grip.shape[0], 1, 3)
    tracked_grip = track_objects(samples, inner.expand(s, -1, -1, -1),
                                 grip[None, :, :1].expand(s, -1, -1, -1))[..., 0, :]        # [S, B, F, 2]
    colors = batch["object_color"].float()
    start = objects[:, 0]                                                                # [B, K, 2]
    tracked = track_objects(samples, colors.expand(s, -1, -1, -1), start.expand(s, -1, -1, -1))
    reached = ((tracked_grip[:, :, :, None] - start[None, :, None]).norm(dim=-1).min(2).values < reach) & mask
    travel = (tracked[:, :, -1] - start).norm(dim=-1)                                    # [S, B, K]
    return {"gripper": (tracked_grip[:, :, -1] - grip[None, :, 0]).norm(dim=-1).sum(),
            "sample_objects": mask.sum() * s * 1.0, "reached": reached.sum() * 1.0,
            "reached_travel": travel[reached].sum(), "unreached": (~reached & mask).sum() * 1.0,
            "unreached_travel": travel[~reached & mask].sum()}


def summarize(sums: dict[str, float], sequences: int, samples: int) -> Contact:
    def ratio(num: str, den: str) -> float:
        return sums[num] / sums[den] if sums[den] > 0 else float("nan")

    return Contact(sequences=sequences, samples=samples, gripper_travel_true=sums["gripper_true"] / sequences,
                   gripper_travel_predicted=sums["gripper"] / (sequences * samples),
                   reached_true=ratio("reached_true", "objects"), reached_predicted=ratio("reached", "sample_objects"),
                   reached_travel_true=ratio("reached_travel_true", "reached_true"),
                   reached_travel_predicted=ratio("reached_travel", "reached"),
                   unreached_travel_predicted=ratio("unreached_travel", "unreached"))


@torch.no_grad()
def contact(model, dataset, *, reach: float, sequences: int = 32, samples: int = 16, seed: int = 0,
            truth: bool = False) -> Contact:
    """:class:`Contact` of ``samples`` futures (with ``truth``: of the true frames, one
    "sample" each) of the first ``sequences`` sequences of a pusher evaluation split."""
    if sequences < 1 or samples < 1:
        raise ValueError(f"need at least one sequence and one sample, got --sequences {sequences} --samples {samples}")
    generator = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = {}
    seen, n_ctx = 0, model.n_past

    def add(parts: dict[str, Tensor]) -> None:
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + float(value)

    with eval_mode(model):
        for batch, horizon in eval_batches(model, dataset, sequences, 8, torch.device("cpu")):
            add(true_parts(batch, n_ctx, horizon, reach))
            if truth:
                add(sample_parts(batch["frames"][None, :, n_ctx:n_ctx + horizon], batch, n_ctx, reach))
            else:
                for _, chunk in future_chunks(model, batch, horizon, samples, generator, n_ctx=n_ctx):
                    add(sample_parts(chunk, batch, n_ctx, reach))
            seen += batch["frames"].shape[0]
    return summarize(sums, seen, 1 if truth else samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", default="", help="a run folder or checkpoint (or --pretrained)")
    parser.add_argument("--pretrained", default="", help="a shipped model by name")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margin", type=float, default=0.05, help="table units beyond touching that count as reach")
    parser.add_argument("--truth", action="store_true", help="track the true frames instead of samples")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    try:
        model, cfg, _ = load_model(model_source(args.checkpoint, args.pretrained))
        if cfg.data.name != "pusher":
            raise ValueError(f"this tool reads pusher models; this one was trained on {cfg.data.name!r}")
        reach = cfg.data.world.gripper_radius + cfg.data.world.object_radius + args.margin
        threads = torch.get_num_threads()
        torch.set_num_threads(args.threads or threads)
        try:
            result = contact(model, build_data(cfg, args.split), reach=reach, sequences=args.sequences,
                             samples=args.samples, seed=args.seed, truth=args.truth)
        finally:
            torch.set_num_threads(threads)
    except USER_ERRORS as err:
        print(f"pusher_contact: error: {user_message(err)}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
