"""The one training loop, for every model (image VAE, hierarchical VAE, SVG).

Per step (:func:`train_step`): a batch → ``model(batch)`` returns an
:class:`~seqvae.models.output.ELBO` → ``loss = −ELBO`` (batch mean, β = 1) → backward (grad
scaler under fp16) → gradient norm (logged; optionally clipped) →
:class:`~seqvae.training.update_guard.UpdateGuard` skips the update when the norm is
non-finite or a spike relative to the recent accepted norms → Adam step →
``model.commit_step(accepted)`` (buffers such as the optimal-σ EMA change only with an
accepted update). The verdict stays on the device (no host read inside a step); the host
reads the guard's decisions at log and checkpoint steps. After
``train.max_consecutive_skips`` skips in a row the run stops, at the next such step, with
:class:`~seqvae.training.update_guard.UpdatesSkippedError`, its last checkpoint untouched
(the device skips every update past the stall).

Around it, :func:`train` is a short loop over named phases: open the session (restore a
resumed run or start one: :mod:`seqvae.training.session`), then per step the step itself,
the log window (metrics to ``metrics.jsonl``, the progress line), and the periodic work
(checkpoint first, then the test-split evaluation and the figures, so that a failing
evaluation never costs training). Ctrl-C / SIGTERM finish the step, write a checkpoint and
stop with :class:`~seqvae.training.interrupt.TrainingInterrupted`. What the run folder may
already hold, and how it is made ready, is :mod:`seqvae.training.run_folder`. The same
entry point runs under ``torchrun`` with DDP (seeds ``seed * world + rank``).

Run folder layout::

    <out_dir>/config.yaml       the resolved config
    <out_dir>/run.json          what the process ran with (device, precision, threads, torch)
    <out_dir>/metrics.jsonl     one JSON object per log line ({"step", "split", ...})
    <out_dir>/checkpoint.pt     the latest checkpoint
    <out_dir>/images/           step_XXXXXXX_{reconstructions,samples}.png (and _predictions.mp4 for videos)
    <out_dir>/index.html        the run's page (seqvae.render.report), written at every evaluation
    <out_dir>/report/           what only the page shows (the training curves)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seqvae import amp, dist
from seqvae.config import RunConfig
from seqvae.data.spec import batch_to_device
from seqvae.evaluation.elbo import check_batch, evaluate_elbo, score_batch
from seqvae.models.output import ELBO
from seqvae.render.report import write_run_page
from seqvae.threads import governed
from seqvae.training import run_folder
from seqvae.training.figures import save_image_grids, save_prediction_video
from seqvae.training.interrupt import StopSignals, TrainingInterrupted
from seqvae.training.lr_schedule import learning_rate
from seqvae.training.progress import Progress
from seqvae.training.run_lock import RunLock
from seqvae.training.session import Session, open_session


def train(cfg: RunConfig, resume: bool = False, dry_run: bool = False, progress: bool = True,
          overrides: list[str] | tuple[str, ...] | None = None, force: bool = False) -> Path:
    """Train ``cfg``; return the run folder. ``dry_run`` builds everything and runs one step.

    ``resume`` continues the run in ``cfg.train.out_dir`` from its checkpoint, whose config is
    the truth: with ``overrides`` (``key=value`` strings, what the command line passes) the
    run continues with the checkpoint's config plus those; without, ``cfg`` is taken as that
    config's new version. Either way only settings that keep the model's shapes may differ
    (``train.*``, data paths, ...); anything else is a :class:`ConfigError`. A folder that
    holds a run which stopped before its first checkpoint starts afresh (with or without
    ``resume``). ``force`` allows a non-empty folder that holds no seqvae run.

    SIGINT/SIGTERM end the step in progress, write a checkpoint and raise
    :class:`TrainingInterrupted`. Another training process writing the same folder is a
    :class:`~seqvae.training.run_folder.RunFolderError` (:mod:`seqvae.training.run_lock`).
    """
    # one writer per run folder, from before it is looked at until the end (rank 0 under DDP)
    with RunLock(Path(cfg.train.out_dir), enabled=not dry_run and dist.launched_rank() == 0):
        session = open_session(cfg, resume, dry_run, overrides, force)
        tc = session.cfg.train
        if session.step >= tc.steps:
            if not dry_run and dist.is_main():   # e.g. a kill while the last step's figures were written
                for note in run_folder.clean(session.run_dir):
                    dist.print0(note)
            dist.print0(f"the run is already at step {session.step} >= train.steps={tc.steps}; "
                        "raise train.steps to continue")
            return session.run_dir
        deadline = time.perf_counter() + tc.time_limit_minutes * 60 if tc.time_limit_minutes > 0 else None
        bar = Progress(tc.steps, session.step, deadline, progress and dist.is_main() and not dry_run, tc.log_every)
        window = LogWindow(time.perf_counter())
        page = PageRefresh()
        try:
            run_steps(session, bar, window, page, deadline, dry_run)
        finally:   # the DataLoader workers stop now, also on an error or a signal (not at interpreter exit)
            session.batches.close()
            bar.close()
        dist.barrier()
        return session.run_dir


def run_steps(session: Session, bar: Progress, window: LogWindow, page: PageRefresh, deadline: float | None,
              dry_run: bool) -> None:
    """The steps of :func:`train`, each followed by its log line, checkpoint, evaluation and
    figures when due, until ``train.steps``, the time limit or a stop signal."""
    tc = session.cfg.train
    saved_step = session.step if session.resumed else -1
    last_step = tc.steps if not dry_run else session.step + 1
    session.model.train()
    with StopSignals(None if dry_run else session.run_dir) as signals:
        while session.step < last_step:
            signals.step = session.step
            batch = batch_to_device(next(session.batches), session.device)
            result = train_step(session, batch)
            window.examples += batch["frames"].shape[0] * dist.world()
            is_last = session.step == tc.steps or (deadline is not None and out_of_time(deadline, session.device))
            if dry_run or is_last or host_work_due(tc, session.step):
                session.guard.sync()   # the guard decided on the device; the host learns it here
            stop_if_stalled(session, result)
            if dry_run:
                dist.print0(f"dry run: one step done, loss {float(result.loss.detach()):.2f}, grad norm "
                            f"{float(result.grad_norm):.3g}; nothing was written")
                break
            if session.step % tc.log_every == 0 or is_last:
                bar.update(session.step, log_window(session, result, window))
                window = LogWindow(time.perf_counter())
            else:
                bar.update(session.step)
            if periodic_checkpoint(session, is_last):
                saved_step = session.step
            periodic_evaluation(session, batch, is_last, page)
            if is_last:
                if session.step < tc.steps:
                    dist.print0(f"stopped at step {session.step}: "
                                f"train.time_limit_minutes={tc.time_limit_minutes} reached")
                break
            signum = signals.requested(session.device)
            if signum:   # Ctrl-C / SIGTERM: this step is done; keep it and stop
                if saved_step != session.step:
                    session.save()
                raise TrainingInterrupted(signum, session.step, session.run_dir, saved=True)


@dataclass
class StepResult:
    """What one step leaves for the log window (tensors: read only when a line is logged)."""

    out: ELBO
    loss: torch.Tensor
    grad_norm: torch.Tensor
    accepted: torch.Tensor          # 0-dim bool on the device: whether the update was applied


def train_step(session: Session, batch: dict[str, torch.Tensor]) -> StepResult:
    """One optimizer step on ``batch`` (see the module); advances ``session.step``.

    Nothing in it reads a tensor's value on the host (a GPU runs it at its own pace): the
    guard's verdict stays on the device and reaches the update as fused Adam's ``found_inf``
    (the kernel leaves parameters, moments and step count alone where it is set) and
    ``commit_step`` as a tensor. tests/test_step_sync.py checks it."""
    tc, model, optimizer, scaler = session.cfg.train, session.model, session.optimizer, session.scaler
    check_batch(model, batch["frames"])
    with governed(session.governor):
        with amp.autocast(session.device, session.dtype):
            out = session.step_fn(batch)
        loss = out.loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = gradient_norm(model, tc.grad_clip)   # pre-clip; clipped in place when train.grad_clip > 0
        skip = session.guard.decide(grad_norm, session.step + 1)   # non-finite or a spike; counted, never silent
        rate = learning_rate(session.step, tc.lr, tc.steps, tc.lr_schedule, tc.lr_warmup_steps, tc.lr_final_fraction)
        for group in optimizer.param_groups:
            group["lr"] = rate
        apply_update(optimizer, scaler, skip)
        model.commit_step(~skip)  # e.g. the optimal-σ EMA takes this batch's σ* only with an applied update
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    session.step += 1
    return StepResult(out=out, loss=loss, grad_norm=grad_norm, accepted=~skip)


def gradient_norm(model: torch.nn.Module, clip: float) -> torch.Tensor:
    """The global L2 norm of the gradients before clipping; with ``clip > 0`` they are then
    clipped to it in place (no pass over the gradients when clipping is off)."""
    if clip > 0 or not hasattr(torch.nn.utils, "get_total_norm"):   # get_total_norm: torch >= 2.6
        return torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else float("inf"))
    return torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])


def apply_update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, skip: torch.Tensor) -> None:
    """The optimizer step, left out where ``skip`` (a device tensor) is set, without reading it.

    Fused Adam takes the verdict as ``found_inf`` (how :class:`torch.amp.GradScaler` hands it
    its own inf check; ours contains that one: an inf or NaN gradient makes the norm
    non-finite, and the grads were unscaled already). Another optimizer needs the verdict
    on the host: one read per step."""
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.grad_scale, optimizer.found_inf = None, skip.to(torch.float32)
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
    elif not bool(skip):
        scaler.step(optimizer)


@dataclass
class LogWindow:
    """The steps since the last metric line: when it began and how many examples it saw."""

    started: float
    examples: int = 0


def log_window(session: Session, result: StepResult, window: LogWindow) -> dict[str, float]:
    """Write the train metric line of the window that ends now; return the progress figures."""
    tc, governor = session.cfg.train, session.governor
    elapsed = max(time.perf_counter() - window.started, 1e-9)
    values = {k: float(v) for k, v in result.out.summary().items()}
    values.update({k: float(v) for k, v in session.model.scalars().items()})
    values.update(loss=float(result.loss.detach()), grad_norm=float(result.grad_norm), **session.guard.window_stats(),
                  examples_per_s=window.examples / elapsed, lr=session.optimizer.param_groups[0]["lr"],
                  threads=torch.get_num_threads() if governor is None else governor.current)
    if session.log is not None:
        session.log.write(session.step, "train", values)
    return {"neg_elbo": values["neg_elbo"], "sigma": values.get("sigma", float("nan")),
            "steps/s": window.examples / elapsed / tc.batch_size / dist.world()}


def host_work_due(tc, step: int) -> bool:
    """Whether step ``step`` writes a log line or a checkpoint: the steps at which the host
    reads the guard's decisions (besides the last one and a full record)."""
    return step % tc.log_every == 0 or bool(tc.checkpoint_every and step % tc.checkpoint_every == 0)


def stop_if_stalled(session: Session, result: StepResult) -> None:
    """``train.max_consecutive_skips`` skipped in a row (as of the guard's last sync): write the
    window that ends at the stall (at the stall's step; loss and grad norm of the step that
    noticed it) and stop loudly, the last checkpoint untouched."""
    guard = session.guard
    if not guard.stalled:
        return
    if session.log is not None:
        session.log.write(guard.streak["last_step"], "train", {"loss": float(result.loss.detach()),
                                                               "grad_norm": float(result.grad_norm),
                                                               **guard.window_stats()})
    raise guard.stall_error()


def periodic_checkpoint(session: Session, is_last: bool) -> bool:
    """Checkpoint every ``train.checkpoint_every`` steps and at the end (deferred while
    updates are being skipped in a row); return whether one was written."""
    every = session.cfg.train.checkpoint_every
    due = every and session.step % every == 0
    if (due and session.guard.consecutive == 0) or is_last:
        session.save()
        return True
    if due:
        dist.print0(f"step {session.step}: checkpoint deferred ({session.guard.consecutive} updates skipped in a row)")
    return False


@dataclass
class PageRefresh:
    """When the trainer writes the run's page again: after every evaluation, except while the
    last page (or the start of training) is less than ``min_seconds`` old — a tiny run
    evaluates every few milliseconds, and a page takes a few tenths of a second — and always
    at the end."""

    min_seconds: float = 20.0
    written: float = field(default_factory=time.perf_counter)

    def due(self, is_last: bool) -> bool:
        now = time.perf_counter()
        if is_last or now - self.written >= self.min_seconds:
            self.written = now
            return True
        return False


def periodic_evaluation(session: Session, batch: dict[str, torch.Tensor], is_last: bool,
                        page: PageRefresh | None = None) -> None:
    """The test-split bound every ``train.eval_every`` steps and the figures every
    ``train.image_every`` steps (and both at the end), after the step's checkpoint; then the
    run's page (``index.html``) is written again (``page`` may hold back a page within
    seconds of the last one; the last step always writes it). The test bound is also taken on the first
    frames of each test sequence, as many as the training batches have (``bpd_window``), and
    the step's training batch is scored as the test split is (split ``train_eval``: eval
    mode, the head's evaluation σ), so that train and test are compared on the same terms."""
    tc, step = session.cfg.train, session.step
    evaluated = (tc.eval_every and step % tc.eval_every == 0) or is_last
    if evaluated:
        result = evaluate_elbo(session.model, session.test_set, tc.batch_size, session.device, session.dtype,
                               tc.eval_batches, window=batch["frames"].shape[1])
        if session.log is not None:
            # the step's batch scored as the test split is (eval mode, evaluation σ): like with like
            session.log.write(step, "train_eval", score_batch(session.model, batch, session.device, session.dtype))
            session.log.write(step, "test", result)
        window = (f"; its first {result['window_frames']} frames, as trained: {result['bpd_window']:.4f} bits/dim"
                  if "bpd_window" in result else "")
        dist.print0(f"step {step}: test -ELBO {result['neg_elbo']:.2f} nats ({result['bpd']:.4f} bits/dim{window})")
    figures = dist.is_main() and ((tc.image_every and step % tc.image_every == 0) or is_last)
    if figures:
        session.model.eval()
        save_image_grids(session.model, batch, session.run_dir, step, tc.seed)
        save_prediction_video(session.model, session.test_set, session.run_dir, step, tc.seed, session.device)
        session.model.train()
    if session.log is not None and (evaluated or figures) and (page is None or page.due(is_last)):
        write_run_page(session.run_dir)


def out_of_time(deadline: float, device: torch.device) -> bool:
    """Whether the time budget is spent; rank 0 decides for every rank (they stop together)."""
    if not dist.is_initialized():
        return time.perf_counter() > deadline   # no tensor: a read every step would stall a GPU
    flag = torch.tensor([float(time.perf_counter() > deadline)], device=device)
    torch.distributed.broadcast(flag, 0)
    return bool(flag.item())
