"""No host synchronisation inside a training step, except at log intervals (issue 27.2).

On a GPU the host queues a step's kernels and runs ahead; any read of a tensor's value on
the host (``.item()``, ``float(t)``, ``bool(t)``, ``.cpu()``, a pageable ``torch.tensor(...,
device=)`` copy) waits for the queue to drain and leaves the GPU idle while the next step
is queued. This CPU test records such reads (tests/host_reads.py) while the real trainer
runs: steps that write no log line, checkpoint, evaluation or figure must make none; the
log steps must (they read the metrics), which shows the recorder sees them. On CUDA the
same is checked by ``torch.cuda.set_sync_debug_mode`` (tests/test_cuda.py).
"""
import pytest
import torch
from host_reads import HostReads
from tiny_runs import TINY_IMAGE_RUN

import seqvae.training.loop as loop
import seqvae.training.session as session_module
from seqvae import compiled
from seqvae.config import RunConfig, apply_overrides
from seqvae.training import train

STEPS, LOG_EVERY = 10, 4
QUIET = [f"train.steps={STEPS}", f"train.log_every={LOG_EVERY}", "train.eval_every=0", "train.image_every=0",
         "train.checkpoint_every=0", "train.time_limit_minutes=60", "train.threads=1"]
SVG = {"data": {"name": "pusher", "seq_len": 4, "num_test": 4, "num_train": 64, "action_conditioned": True},
       "model": {"name": "svg", "backbone": "dcgan64", "width": 8, "g_dim": 16, "z_dim": 2, "rnn_size": 16,
                 "n_past": 2, "n_future": 2, "n_eval": 2, "action_conditioned": True},
       "likelihood": {"name": "optimal_sigma"}, "train": {"batch_size": 4}}


def traced_run(tmp_path, monkeypatch, base, *overrides) -> HostReads:
    """Train ``base`` + ``overrides`` with every host read recorded and tagged with its step."""
    reads = HostReads()
    real_step, real_stream = loop.train_step, session_module.batch_stream

    def step(session, batch):
        reads.tag = session.step + 1
        return real_step(session, batch)

    def stream(*args, **kwargs):   # the loader's own host-side work (sampler, collate) is not the step's
        it = real_stream(*args, **kwargs)
        while True:
            with reads.pause():
                batch = next(it)
            yield batch
    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.setattr(session_module, "batch_stream", stream)
    cfg = RunConfig.from_dict(apply_overrides(base, [f"train.out_dir={tmp_path / 'run'}", *QUIET, *overrides]))
    with reads:
        train(cfg, progress=False)
    return reads


@pytest.mark.parametrize("base, compile", [(TINY_IMAGE_RUN, False), (SVG, False), (SVG, True)],
                         ids=["conv_vae", "svg", "svg_compiled"])
def test_non_logging_steps_read_nothing_on_the_host(tmp_path, monkeypatch, base, compile):
    """Before issue 27 every step read 6 values on the host (5 without a time limit): the guard's
    float(grad_norm); the optimal-σ EMA's bool(isfinite(σ*²)) and int(ema_steps); σ*²'s count
    as torch.tensor(n, device=...); the time limit's torch.tensor(...) and .item(); and the CPU's
    non-fused Adam one .item() per parameter tensor (on the host there, so no device sync)."""
    if compile:   # dynamo + AOT autograd as inductor would trace it, without inductor's minutes of codegen
        real = compiled.compile_step
        monkeypatch.setattr(compiled, "compile_step", lambda m: real(m, backend="aot_eager"))
        torch._dynamo.reset()
    graphs = compiled.graph_count()
    reads = traced_run(tmp_path, monkeypatch, base, f"train.compile={str(compile).lower()}")
    assert (compiled.graph_count() > graphs) == compile
    quiet = [s for s in range(2, STEPS) if s % LOG_EVERY]        # step 1 may set things up lazily
    found = {s: reads.at(s) for s in quiet if reads.at(s)}
    assert not found, "host reads in non-logging steps:\n" + "\n".join(
        f"step {s}: {len(r)} reads: " + "; ".join(sorted({f"{w} at {site}" for w, site in r}))
        for s, r in found.items())
    for s in range(LOG_EVERY, STEPS, LOG_EVERY):                 # the log steps do read: the recorder works
        assert reads.at(s), s
