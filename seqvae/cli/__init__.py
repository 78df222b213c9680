"""The ``seqvae`` command line, one module per command:

    seqvae train CONFIG [key=value ...] [--resume] [--dry-run] [--force]
    seqvae eval CKPT [--split test] [--samples N] [key=value ...]
    seqvae sample CKPT [--num N] [--seed S] [--out FILE]
    seqvae demo [--minutes M]               (train, predict, plan on the embedded pushing world)
    seqvae analyze CKPT                     (rate, MI, marginal KL, FID)
    seqvae rollout CKPT ...                 (predicted futures -> .npz + MP4)
    seqvae plan [CONFIG] [key=value ...]    (closed-loop planning in a registered world)
    seqvae render INPUT.npz --out FILE      (labelled panels -> MP4 / GIF / PNG)
    seqvae report RUN                       (RUN/index.html: curves, predictions, evaluations, config)
    seqvae play [--port P]                  (drive the pushing world beside the model's prediction, in a browser)

Under ``torchrun --nproc_per_node=N -m seqvae.cli train ...`` training runs with DDP.
Errors a user can fix (bad config, missing or corrupt data, corrupt checkpoint, a full or
read-only disk, a training run whose updates are all being skipped) print one clear
message and exit with status 2; nothing in the run folder is overwritten. Ctrl-C / SIGTERM
stop training after a checkpoint of the finished step (exit 130 / 143).
"""
from __future__ import annotations

import argparse
import re
import sys

from seqvae.checkpoint import CheckpointError
from seqvae.cli import analyze, demo, evaluate, plan, play, render, report, rollout, sample, train
from seqvae.cli.common import check_device
from seqvae.config import ConfigError
from seqvae.data.video_decoding import VideoDecodeError
from seqvae.training.interrupt import TrainingInterrupted
from seqvae.training.run_folder import RunFolderError, describe_os_error
from seqvae.training.update_guard import UpdatesSkippedError

# errors whose message tells the user what to fix: one line on stderr, exit status 2
USER_ERRORS = (ConfigError, CheckpointError, RunFolderError, UpdatesSkippedError, VideoDecodeError, ValueError, OSError)

COMMANDS = (train, evaluate, sample, analyze, rollout, render, plan, demo, report, play)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqvae", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Video prediction with sequential VAEs and calibrated decoders (the σ-VAE).\n\n"
                    + __doc__.split("\n\n")[1])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``key=value`` overrides may also follow the flags
    (``seqvae train CONFIG --resume train.steps=9000``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if "overrides" not in vars(args) or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def user_message(err: BaseException) -> str:
    """The one line a user sees for an error: a DataLoader worker's error without torch's
    wrapping (``Caught X in DataLoader worker process N. Original Traceback ...``), an
    ``OSError`` of the system with its path and what to do."""
    text = str(err)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = re.sub(r"^[\w.]+: ", "", last.strip())
    elif isinstance(err, OSError) and err.errno is not None:
        text = describe_os_error(err)
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # what was run, for records such as eval.json
    try:
        if isinstance(getattr(args, "device", None), str):   # --device cuda without a GPU: one line, not torch's
            check_device(args.device)
        args.func(args)
    except TrainingInterrupted as stop:   # Ctrl-C / SIGTERM during training: where to resume from
        if not stop.quiet:
            print(f"seqvae {args.command}: {stop}", file=sys.stderr, flush=True)
        return stop.exit_code
    except KeyboardInterrupt:
        print(f"seqvae {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        print(f"seqvae {args.command}: error: {user_message(err)}", file=sys.stderr)
        return 2
    return 0
