"""Everything a training run holds, made ready in the order in which a mistake costs
nothing: check the config, look at the run folder (no writes), load a resumed checkpoint
(its config is the truth), build data and model and check every split, load the weights,
and only then write into the run folder (:func:`open_session`)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from seqvae import amp, compiled, dist
from seqvae.build import build_data, build_model, weight_mismatch
from seqvae.checkpoint import load_checkpoint
from seqvae.config import MODEL_SECTIONS, ConfigError, RunConfig, apply_overrides, config_changes, to_yaml
from seqvae.data.loader import batch_stream
from seqvae.io import atomic_write_text
from seqvae.loading import initial_weights
from seqvae.threads import ThreadGovernor
from seqvae.training import run_folder
from seqvae.training.checkpointing import restore, write_checkpoint
from seqvae.training.metrics_log import MetricsLog
from seqvae.training.update_guard import UpdateGuard


@dataclass
class Session:
    """One training run in progress (one process; under DDP one per rank)."""

    cfg: RunConfig
    run_dir: Path
    device: torch.device
    dtype: torch.dtype | None          # autocast dtype (None: fp32)
    model: torch.nn.Module             # the model itself (its state is what is saved)
    net: torch.nn.Module               # what the step calls: the model, DDP-wrapped under torchrun
    step_fn: Any                       # forward + loss (compiled when train.compile)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    guard: UpdateGuard
    governor: ThreadGovernor | None    # CPU threads chosen from measured step times
    train_set: Any
    test_set: Any
    batches: Any                       # the endless, resumable batch stream
    log: MetricsLog | None             # rank 0, not a dry run
    step: int                          # steps done
    resumed: bool
    dry_run: bool

    def save(self) -> None:
        """A checkpoint of the steps done (atomic; rank 0 writes)."""
        write_checkpoint(self.run_dir, self.cfg, self.model, self.optimizer, self.scaler, self.step,
                         self.train_set.spec, self.guard)


def open_session(cfg: RunConfig, resume: bool, dry_run: bool, overrides: list[str] | tuple[str, ...] | None,
                 force: bool) -> Session:
    """Build (or restore) everything :func:`seqvae.training.train` runs; see the module."""
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
    # fused Adam (CUDA and CPU): one kernel for all parameters, and it takes the update guard's
    # verdict as a device tensor (found_inf), so a step never reads it on the host
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2), weight_decay=tc.weight_decay,
                                 fused=True)
    dtype = amp.resolve(tc.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    guard = UpdateGuard.from_config(tc, warn=dist.is_main())

    step = 0
    if payload is not None:
        step = restore(payload, run_dir, train_set.spec, changes, model, optimizer, scaler, guard, device)
        dist.print0(f"resumed {run_dir} at step {step}")
    elif tc.init_from:
        initialize_from(model, tc.init_from, cfg)
        dist.print0(f"model weights from {tc.init_from} (optimizer fresh, step 0)")
    session = Session(cfg=cfg, run_dir=run_dir, device=device, dtype=dtype, model=model, net=model, step_fn=model,
                      optimizer=optimizer, scaler=scaler, guard=guard, governor=governor, train_set=train_set,
                      test_set=test_set, batches=None, log=None, step=step, resumed=payload is not None,
                      dry_run=dry_run)
    if step >= tc.steps:
        return session
    if not dry_run:   # only now, with the checkpoint loaded and every part built, the folder is written
        if dist.is_main():
            for note in run_folder.prepare(run_dir, kind, to_yaml(cfg), step):
                dist.print0(note)
        dist.barrier()

    session.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    use_compile = compiled.resolve(tc.compile, device)
    session.step_fn = compiled.compile_step(session.net) if use_compile else session.net   # the update stays eager
    session.batches = batch_stream(train_set, tc.batch_size, tc.seed, rank, world, tc.num_workers, start_step=step,
                                   pin_memory=device.type == "cuda")
    if dist.is_main() and not dry_run:
        session.log = MetricsLog(run_dir, tc.tensorboard)
        write_run_record(session, use_compile)
    n_params = sum(p.numel() for p in model.parameters())
    dist.print0(f"{cfg.model.name} + {cfg.likelihood.name} on {cfg.data.name}: {n_params / 1e6:.2f} M parameters, "
                f"{device}, precision {dtype or torch.float32}, world {world}")
    return session


def write_run_record(session: Session, use_compile: bool) -> None:
    """``run.json``: what this process actually runs with (auto settings resolved)."""
    tc, governor = session.cfg.train, session.governor
    atomic_write_text(session.run_dir / "run.json", json.dumps({
        "device": str(session.device), "precision": str(session.dtype or torch.float32).replace("torch.", ""),
        "world": dist.world(), "compile": use_compile, "init_from": tc.init_from if not session.resumed else None,
        "threads": "chosen per step from measured step times" if governor and len(governor.candidates) > 1
        else torch.get_num_threads(), "torch": torch.__version__,
        "resumed_at_step": session.step if session.resumed else None,
    }, indent=2) + "\n")


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
    weights are checked when they load). Model, likelihood or data set names never change.

    With ``overrides`` (``key=value`` strings, what the command line passes) the run
    continues with the checkpoint's config plus those; without, ``cfg`` is taken as that
    config's new version."""
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
