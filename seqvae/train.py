"""The one training loop, for every model (image VAE, hierarchical VAE, SVG).

Per step: a batch → ``model(batch)`` returns an :class:`~seqvae.models.output.ELBO` →
``loss = −ELBO`` (batch mean, β = 1) → backward (grad scaler under fp16) → gradient
norm (logged; optionally clipped) → :class:`~seqvae.update_guard.UpdateGuard` skips the
update when the norm is non-finite or a spike relative to the recent accepted norms →
Adam step → ``model.commit_step(accepted)`` (buffers such as the optimal-σ EMA change only
with an accepted update). Skipped/clipped fractions go to the metrics; after
``train.max_consecutive_skips`` skips in a row the run stops with
:class:`~seqvae.update_guard.UpdatesSkippedError`, its last checkpoint untouched.

Around it: metrics to ``metrics.jsonl`` (and TensorBoard when asked and installed),
atomic checkpoints (model, optimizer, scaler, step, RNG) and exact ``--resume``, periodic
test-split evaluation (after the step's checkpoint: a failing evaluation never costs
training), periodic reconstruction/sample PNG grids. Ctrl-C / SIGTERM finish the step,
write a checkpoint and stop with :class:`~seqvae.interrupt.TrainingInterrupted`
(:mod:`seqvae.interrupt`). What the run folder may already hold, and how it is made ready
(stale temporary files removed, metrics past a resumed checkpoint dropped), is
:mod:`seqvae.run_folder`. The same entry point runs under ``torchrun`` with DDP (seeds
``seed * world + rank``).

Order of work, so that a mistake costs nothing: check the config, look at the run folder
(no writes), load a resumed checkpoint (its config is the truth), build data and model and
check every split, load the weights, and only then write into the run folder.

Run folder layout::

    <out_dir>/config.yaml       the resolved config
    <out_dir>/run.json          what the process ran with (device, precision, threads, torch)
    <out_dir>/metrics.jsonl     one JSON object per log line ({"step", "split", ...})
    <out_dir>/checkpoint.pt     the latest checkpoint
    <out_dir>/images/           step_XXXXXXX_{reconstructions,samples}.png
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from seqvae import amp, compiled, dist, run_folder
from seqvae.build import build_data, build_model, initial_weights, load_weights, weight_mismatch
from seqvae.checkpoint import load_checkpoint, save_checkpoint
from seqvae.config import MODEL_SECTIONS, ConfigError, RunConfig, apply_overrides, config_changes, to_yaml
from seqvae.data.loader import batch_stream
from seqvae.data.spec import DataSpec, batch_to_device
from seqvae.evaluation.elbo import check_batch, evaluate_elbo
from seqvae.interrupt import StopSignals, TrainingInterrupted
from seqvae.io import atomic_write_text
from seqvae.lr_schedule import learning_rate
from seqvae.progress import Progress
from seqvae.run_folder import RunFolderError
from seqvae.threads import ThreadGovernor, governed
from seqvae.train_figures import save_image_grids
from seqvae.update_guard import UpdateGuard


__all__ = ["train", "RunFolderError", "TrainingInterrupted"]


class MetricsLog:
    """JSONL metrics (rank 0), plus TensorBoard scalars when asked for and installed."""

    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                dist.print0("train.tensorboard=true but the tensorboard package is not installed; logging JSONL only")

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        record = {"step": step, "split": split, **values}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{split}/{key}", value, step)


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
    :class:`TrainingInterrupted`.
    """
    check_config(cfg)
    run_dir = Path(cfg.train.out_dir)
    kind = run_folder.inspect(run_dir, resume, force) if not dry_run else (run_folder.RESUME if resume else None)
    payload, changes = None, []
    if kind == run_folder.RESUME:   # before anything is written: a failed load leaves the folder as it was
        payload = load_checkpoint(run_dir / "checkpoint.pt")
        cfg, changes = resumed_config(payload, cfg, overrides, run_dir)
    tc = cfg.train
    device = dist.init()
    amp.setup_backends(device)
    rank, world = dist.rank(), dist.world()
    # CPU: the thread count is chosen from measured step times (seqvae.threads), unless fixed
    governor = ThreadGovernor.for_this_process(tc.threads) if device.type == "cpu" and world == 1 else None
    if governor is None and tc.threads > 0:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed * world + rank)

    train_set, test_set = build_data(cfg, "train"), build_data(cfg, "test")
    check_splits(cfg, train_set, test_set)
    model = build_model(cfg, train_set.spec).to(device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # fused Adam: one kernel for all parameters (CUDA only; the CPU keeps the default implementation)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2), weight_decay=tc.weight_decay,
                                 fused=True if device.type == "cuda" else None)
    dtype = amp.resolve(tc.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    guard = UpdateGuard.from_config(tc, warn=dist.is_main())

    step = 0
    if payload is not None:
        if DataSpec(**payload["spec"]) != train_set.spec:
            raise ConfigError(
                f"--resume: the data now give {train_set.spec} but {run_dir / 'checkpoint.pt'} was trained on "
                f"{DataSpec(**payload['spec'])}" + (f" (changed: {'; '.join(changes)})" if changes else "")
                + "; a resumed run keeps its data shape: drop those overrides or train a new run in another train.out_dir")
        load_weights(model, payload["model"], run_dir / "checkpoint.pt", changes)
        optimizer.load_state_dict(payload["optimizer"])
        for group in optimizer.param_groups:  # a checkpoint from another device type carries its own fused flag
            group["fused"] = True if device.type == "cuda" else None
        scaler.load_state_dict(payload["scaler"])
        if "update_guard" in payload:  # absent in checkpoints written before the relative skip rule
            guard.load_state_dict(payload["update_guard"])
        step = payload["step"]
        torch.set_rng_state(payload["rng"]["torch"][rank] if world > 1 and len(payload["rng"]["torch"]) == world
                            else payload["rng"]["torch"][0])
        if device.type == "cuda" and payload["rng"].get("cuda"):
            torch.cuda.set_rng_state(payload["rng"]["cuda"][min(rank, len(payload["rng"]["cuda"]) - 1)])
        dist.print0(f"resumed {run_dir} at step {step}")
    elif tc.init_from:
        initialize_from(model, tc.init_from, cfg)
        dist.print0(f"model weights from {tc.init_from} (optimizer fresh, step 0)")
    if step >= tc.steps:
        if not dry_run and dist.is_main():   # e.g. a kill while the last step's figures were written
            for note in run_folder.clean(run_dir):
                dist.print0(note)
        dist.print0(f"the run is already at step {step} >= train.steps={tc.steps}; raise train.steps to continue")
        return run_dir
    if not dry_run:   # only now, with the checkpoint loaded and every part built, the folder is written
        if dist.is_main():
            for note in run_folder.prepare(run_dir, kind, to_yaml(cfg), step):
                dist.print0(note)
        dist.barrier()

    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    use_compile = compiled.resolve(tc.compile, device)
    step_fn = compiled.compile_step(net) if use_compile else net   # forward + loss; the update stays eager
    batches = batch_stream(train_set, tc.batch_size, tc.seed, rank, world, tc.num_workers, start_step=step,
                           pin_memory=device.type == "cuda")
    log = MetricsLog(run_dir, tc.tensorboard) if dist.is_main() and not dry_run else None
    if log is not None:  # what this process actually runs with (auto settings resolved)
        atomic_write_text(run_dir / "run.json", json.dumps({
            "device": str(device), "precision": str(dtype or torch.float32).replace("torch.", ""), "world": world,
            "compile": use_compile, "init_from": tc.init_from if payload is None else None,
            "threads": "chosen per step from measured step times" if governor and len(governor.candidates) > 1
            else torch.get_num_threads(), "torch": torch.__version__, "resumed_at_step": step if payload is not None else None,
        }, indent=2) + "\n")
    n_params = sum(p.numel() for p in model.parameters())
    dist.print0(f"{cfg.model.name} + {cfg.likelihood.name} on {cfg.data.name}: {n_params / 1e6:.2f} M parameters, "
                f"{device}, precision {dtype or torch.float32}, world {world}")

    deadline = time.perf_counter() + tc.time_limit_minutes * 60 if tc.time_limit_minutes > 0 else None
    bar = Progress(tc.steps, step, deadline, progress and dist.is_main() and not dry_run, tc.log_every)
    window = {"t": time.perf_counter(), "examples": 0}
    model.train()
    last_steps = tc.steps if not dry_run else step + 1
    saved_step = step if payload is not None else -1
    save = lambda: write_checkpoint(run_dir, cfg, model, optimizer, scaler, step, train_set.spec, guard)  # noqa: E731
    with StopSignals(None if dry_run else run_dir) as signals:
        while step < last_steps:
            signals.step = step
            batch = batch_to_device(next(batches), device)
            check_batch(model, batch["frames"])
            with governed(governor):
                with amp.autocast(device, dtype):
                    out = step_fn(batch)
                loss = out.loss
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                           tc.grad_clip if tc.grad_clip > 0 else float("inf"))
                ok = guard.check(grad_norm, step + 1)  # False: non-finite or a spike; counted, never silent
                if ok:
                    rate = learning_rate(step, tc.lr, tc.steps, tc.lr_schedule, tc.lr_warmup_steps, tc.lr_final_fraction)
                    for group in optimizer.param_groups:
                        group["lr"] = rate
                    scaler.step(optimizer)
                model.commit_step(ok)  # e.g. the optimal-σ EMA takes this batch's σ* only with an applied update
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            step += 1
            window["examples"] += batch["frames"].shape[0] * world
            if guard.stalled:  # train.max_consecutive_skips in a row: stop loudly, the last checkpoint untouched
                if log is not None:
                    log.write(step, "train", {"loss": float(loss.detach()), "grad_norm": float(grad_norm),
                                              **guard.window_stats()})
                raise guard.stall_error()

            if dry_run:
                dist.print0(f"dry run: one step done, loss {float(loss.detach()):.2f}, grad norm {float(grad_norm):.3g}; "
                            "nothing was written")
                break
            is_last = step == tc.steps or (deadline is not None and out_of_time(deadline, device))
            if step % tc.log_every == 0 or is_last:
                elapsed = time.perf_counter() - window["t"]
                values = {k: float(v) for k, v in out.summary().items()}
                values.update({k: float(v) for k, v in model.scalars().items()})
                values.update(loss=float(loss.detach()), grad_norm=float(grad_norm), **guard.window_stats(),
                              examples_per_s=window["examples"] / max(elapsed, 1e-9), lr=optimizer.param_groups[0]["lr"],
                              threads=torch.get_num_threads() if governor is None else governor.current)
                if log is not None:
                    log.write(step, "train", values)
                bar.update(step, {"neg_elbo": values["neg_elbo"], "sigma": values.get("sigma", float("nan")),
                                  "steps/s": window["examples"] / max(elapsed, 1e-9) / tc.batch_size / world})
                window = {"t": time.perf_counter(), "examples": 0}
            else:
                bar.update(step)
            # the checkpoint comes before evaluation and figures: a failure there never costs training
            if (tc.checkpoint_every and step % tc.checkpoint_every == 0 and guard.consecutive == 0) or is_last:
                save()
                saved_step = step
            elif tc.checkpoint_every and step % tc.checkpoint_every == 0:
                dist.print0(f"step {step}: checkpoint deferred ({guard.consecutive} updates skipped in a row)")
            if (tc.eval_every and step % tc.eval_every == 0) or is_last:
                result = evaluate_elbo(model, test_set, tc.batch_size, device, dtype, tc.eval_batches)
                if log is not None:
                    log.write(step, "test", result)
                dist.print0(f"step {step}: test -ELBO {result['neg_elbo']:.2f} nats ({result['bpd']:.4f} bits/dim)")
            if dist.is_main() and ((tc.image_every and step % tc.image_every == 0) or is_last):
                model.eval()
                save_image_grids(model, batch, run_dir, step, tc.seed)
                model.train()
            if is_last:
                if step < tc.steps:
                    dist.print0(f"stopped at step {step}: train.time_limit_minutes={tc.time_limit_minutes} reached")
                break
            signum = signals.requested(device)
            if signum:   # Ctrl-C / SIGTERM: this step is done; keep it and stop
                if saved_step != step:
                    save()
                bar.close()
                raise TrainingInterrupted(signum, step, run_dir, saved=True)
    bar.close()
    dist.barrier()
    return run_dir


def initialize_from(model: torch.nn.Module, source: str, cfg: RunConfig) -> None:
    """Load ``train.init_from``'s model weights into ``model`` (built from ``cfg``); a model
    of another name or shape is a :class:`ConfigError` that says which."""
    state, source_cfg = initial_weights(source)
    for section in ("model", "likelihood"):
        old, new = (source_cfg.get(section) or {}).get("name"), getattr(cfg, section).name
        if old != new:
            raise ConfigError(f"train.init_from={source} holds a {section} {old!r}, but this run trains {section} "
                              f"{new!r}: start from weights of the same model, or drop train.init_from")
    what = weight_mismatch(model, state)
    if what:
        raise ConfigError(f"train.init_from={source}: its weights do not fit the model this config builds ({what}); "
                          "give the model section the sizes of the run the weights come from")
    model.load_state_dict(state)


def resumed_config(payload: dict[str, Any], cfg: RunConfig, overrides: list[str] | tuple[str, ...] | None,
                   run_dir: Path) -> tuple[RunConfig, list[str]]:
    """The config a resumed run continues with, and which model/likelihood/data settings it
    changes against the checkpoint's own config (allowed only while the shapes stay: the
    weights are checked when they load). Model, likelihood or data set names never change."""
    saved = RunConfig.from_dict(payload["config"])
    if overrides is not None:   # the checkpoint's config + the command line's overrides
        given = cfg
        raw = apply_overrides(saved.to_dict(), [*overrides, f"train.out_dir={run_dir}"])
        _same_components(saved, {s: (raw.get(s) or {}).get("name") for s in MODEL_SECTIONS}, run_dir)
        cfg = RunConfig.from_dict(raw)
        ignored = config_changes(cfg.to_dict(), given.to_dict(), (*MODEL_SECTIONS, "train"))
        if ignored:
            dist.print0(f"--resume continues with the config stored in {run_dir / 'checkpoint.pt'}; the config file "
                        f"differs in {'; '.join(ignored[:6])}{' ...' if len(ignored) > 6 else ''}, which is not used "
                        "(pass key=value overrides to change settings of a resumed run)")
    _same_components(saved, {s: getattr(cfg, s).name for s in MODEL_SECTIONS}, run_dir)
    return cfg, config_changes(saved.to_dict(), cfg.to_dict())


def _same_components(saved: RunConfig, names: dict[str, Any], run_dir: Path) -> None:
    for section, new in names.items():
        old = getattr(saved, section).name
        if old != new:
            raise ConfigError(f"--resume: {section}.name={new!r} but {run_dir / 'checkpoint.pt'} holds a run of "
                              f"{section} {old!r}; a resumed run keeps its model, likelihood and data set. Drop the "
                              "override, or train a new run in another train.out_dir")


def check_splits(cfg: RunConfig, train_set, test_set) -> None:
    """Every split the run uses holds data (found now, not at the end of training)."""
    for split, dataset in (("train", train_set), ("test", test_set)):
        try:
            size = len(dataset)
        except TypeError:   # an iterable split without a length: its loader says so when it runs dry
            continue
        if size == 0:
            raise ConfigError(
                f"the {split} split of data set {cfg.data.name!r} is empty; training needs it "
                + ("for its batches" if split == "train" else "to evaluate every train.eval_every steps and at the end")
                + ": check data.root and the split settings (e.g. data.test_size, data.test_fraction)")
    if isinstance(train_set, torch.utils.data.IterableDataset):
        return
    per_batch = cfg.train.batch_size * dist.world()
    if len(train_set) < per_batch:
        raise ConfigError(f"the train split has {len(train_set)} examples, fewer than one batch of "
                          f"{cfg.train.batch_size} per process ({dist.world()} processes); lower train.batch_size "
                          "or add data")


def out_of_time(deadline: float, device: torch.device) -> bool:
    """Whether the time budget is spent; rank 0 decides for every rank (they stop together)."""
    flag = torch.tensor([float(time.perf_counter() > deadline)], device=device)
    if dist.is_initialized():
        torch.distributed.broadcast(flag, 0)
    return bool(flag.item())


def write_checkpoint(run_dir: Path, cfg: RunConfig, model, optimizer, scaler, step: int, spec,
                     guard: UpdateGuard) -> None:
    """Gather every rank's RNG state; rank 0 writes the checkpoint atomically."""
    rng = torch.get_rng_state()
    if dist.world() > 1:
        states = [torch.empty_like(rng) for _ in range(dist.world())]
        torch.distributed.all_gather_object(states, rng)
    else:
        states = [rng]
    cuda = [torch.cuda.get_rng_state()] if torch.cuda.is_available() else []
    if dist.is_main():
        save_checkpoint(run_dir / "checkpoint.pt", {
            "config": cfg.to_dict(), "spec": asdict(spec), "step": step,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "rng": {"torch": states, "cuda": cuda}, "update_guard": guard.state_dict(),
        })
    dist.barrier()


def check_config(cfg: RunConfig) -> None:
    """Cheap sanity checks before any work starts (single fields are checked by the config
    dataclasses themselves, e.g. :class:`~seqvae.config.TrainConfig`)."""
    try:
        compiled.resolve(cfg.train.compile, torch.device("cpu"))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        UpdateGuard.from_config(cfg.train)
    except ValueError as err:
        raise ConfigError(f"train skip settings: {err}") from None
