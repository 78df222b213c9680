"""The CUDA code paths (marked ``cuda``: skipped without a GPU; tools/gpu_check.sh and
tools/gpu_run.sh run them).

Tolerances, stated:
* mixed precision: 50 Adam steps of a small dcgan64 SVG-LP from the same start on the same
  batches; every loss finite, and the mean −ELBO of steps 41–50 within 3 % of fp32's
  (bf16 keeps 8 mantissa bits: per-step values differ by ~0.1–1 %, trajectories drift).
* channels_last vs contiguous: the same −ELBO within 1e-4 relative and the whole gradient
  vector within 1e-3 relative L2 (TF32 off; other kernels sum in another order; a wrong
  layout would be off by O(1)). Biases before BatchNorm have ~0 gradients (pure rounding),
  so no per-tensor relative check.
* rollouts on GPU (why they can differ bit for bit, and when they must not: see
  :func:`test_rollout_bit_identical_on_gpu_with_fixed_algorithms`): with fixed algorithms
  the same seed gives bit-identical frames on every call; with the training backends
  (cuDNN benchmark, TF32) two calls agree within 1e-4; the graph path matches the
  graph-free path within 2e-3 (other kernels per chunk shape, inductor's fusions).
* the training step makes no host synchronisation outside log steps
  (``torch.cuda.set_sync_debug_mode("error")``; the CPU version is tests/test_step_sync.py).
"""
import os

# cuBLAS picks reproducible kernels only with a fixed workspace configuration, read when its
# first handle is made (before any test here runs a matmul); tools/gpu_run.sh sets it too
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import contextlib
import copy
import json

import pytest
import torch

from seqvae.config import RunConfig
from seqvae.control.rollout import rollout
from seqvae.data.spec import DataSpec
from seqvae.likelihoods.gaussian import OptimalSigmaGaussian
from seqvae.loading import load_model
from seqvae.models.svg import SVGConfig, build_svg
from seqvae.training import loop as training_loop
from seqvae.training import train

pytestmark = pytest.mark.cuda
DEV = torch.device("cuda")
REPEAT_ATOL = 1e-4        # two graphed rollouts under the training backends (nondeterministic kernels allowed)
GRAPH_VS_PLAIN_ATOL = 2e-3


@contextlib.contextmanager
def backends(*, deterministic: bool, benchmark: bool, tf32: bool):
    """cuDNN/cuBLAS settings for one block; what was set before comes back after (a test
    must not leave TF32 on for the next one)."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = deterministic, benchmark, tf32, tf32
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved[:4]
        torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])


def _svg(actions=False):
    torch.manual_seed(0)
    cfg = SVGConfig(backbone="dcgan64", width=32, g_dim=64, z_dim=8, rnn_size=64, n_past=2, n_future=4,
                    action_conditioned=actions)
    return build_svg(cfg, OptimalSigmaGaussian(), DataSpec(3, 64, 64, 6, 4 if actions else 0)).to(DEV)


def _batches(n, b=8):
    g = torch.Generator().manual_seed(3)
    base = torch.rand(b, 1, 3, 64, 64, generator=g)
    # smooth moving content so the model can learn something in 50 steps
    return [(base + 0.05 * torch.randn(b, 6, 3, 64, 64, generator=g)).clamp(0, 1).to(DEV) for _ in range(n)]


def _train(dtype, steps=50):
    model = _svg()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    losses = []
    for i, x in enumerate(_batches(steps)):
        torch.manual_seed(i)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            out = model({"frames": x})
        scaler.scale(out.loss).backward()
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        model.commit_step(True)
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.neg_elbo.mean().detach()))
    return losses


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16_scaler"])
def test_mixed_precision_steps_match_fp32(dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    ref, got = _train(None), _train(dtype)
    assert all(torch.isfinite(torch.tensor(got)))
    assert ref[-1] < ref[0]                                   # fp32 learned something
    a, b = sum(ref[-10:]) / 10, sum(got[-10:]) / 10
    assert abs(a - b) <= 0.03 * abs(a), (a, b)


def test_channels_last_equals_contiguous():
    with backends(deterministic=False, benchmark=False, tf32=False):
        m1 = _svg()
        m2 = copy.deepcopy(m1).to(memory_format=torch.channels_last)
        x = _batches(1)[0]
        outs = []
        for m in (m1, m2):
            torch.manual_seed(0)
            out = m({"frames": x})
            out.loss.backward()
            outs.append((float(out.loss.detach()), [p.grad for p in m.parameters()]))
        assert abs(outs[0][0] - outs[1][0]) <= 1e-4 * abs(outs[0][0])
        g1, g2 = (torch.cat([g.flatten() for g in o[1]]) for o in outs)
        assert float((g1 - g2).norm() / g1.norm()) <= 1e-3


def _planning_inputs():
    ctx = torch.rand(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(DEV)
    actions = torch.randn(2, 20, 5, 4, generator=torch.Generator().manual_seed(2)).to(DEV)
    return ctx, actions


def _rollouts(model, n, **kwargs):
    """``n`` calls with the same seed: 2·20·3 = 120 rows in chunks of 64 (the second padded
    from 56). The first call compiles, runs chunk 1 in cudagraph-trees' warm-up (the
    inductor kernels, no graph) and records the graph on chunk 2; later calls replay it."""
    ctx, actions = _planning_inputs()
    return [rollout(model, ctx, actions, 3, generator=torch.Generator().manual_seed(0), precision="fp32",
                    max_batch=64, **kwargs).frames for _ in range(n)]


def _difference(a, b) -> str:
    """Where two rollouts [B, K, S, T, C, H, W] differ: the size, how many values, the first
    row (its chunk of 64) and frame; what a failure must report to be diagnosed."""
    diff = (a - b).abs()
    if not bool(diff.any()):
        return "identical"
    flat = diff.flatten(0, 2).flatten(2).amax(-1)                  # [rows, T]
    rows = flat.amax(1).nonzero().flatten().tolist()
    frames = flat.amax(0).nonzero().flatten().tolist()
    return (f"max |Δ| {float(diff.max()):.3g}, {int((diff > 0).sum())} of {diff.numel()} values differ; rows "
            f"{rows[:6]}{' …' if len(rows) > 6 else ''} (chunks {sorted({r // 64 for r in rows})}), first frame "
            f"{frames[0]} of {a.shape[3]}")


def test_rollout_bit_identical_on_gpu_with_fixed_algorithms():
    """Why graphed rollouts can differ bit for bit on CUDA, and the settings under which they
    cannot (an earlier version of this test, run with the defaults, failed on an H200).

    Every value a rollout computes is a deterministic function of its inputs unless a
    kernel's result depends on something else:

    1. cuDNN's algorithm choice. The dcgan64 decoder is ConvTranspose2d, whose forward *is*
       cuDNN's backward-data convolution; some of its engines (CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
       and v8 engines flagged CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC, e.g. split-K ones)
       accumulate partial sums with atomic adds, in whatever order the blocks finish: the
       same call gives different low bits from run to run. The heuristics may pick one
       unless ``cudnn.deterministic`` is set. With ``cudnn.benchmark`` (what
       seqvae.amp.setup_backends turns on for training) the fastest engine is measured, may
       be a nondeterministic one, and may differ per shape, per pointer alignment (part of
       PyTorch's plan-cache key) and per process.
    2. cuBLAS: reproducible for the same GPU model, SM count and a single stream, and only
       with a fixed workspace configuration (CUBLAS_WORKSPACE_CONFIG, set at the top of this
       file and by gpu_run.sh); cudagraph trees warm up and record on a side stream. The
       compiled graph runs the LSTMs decomposed into addmm calls (cuBLAS/cuBLASLt), the
       graph-free path runs cuDNN's fused RNN: a different algorithm, so those two paths
       agree only to rounding.
    3. TF32 (on for training): rounds matmul/conv inputs to 10 mantissa bits. It is
       deterministic, but it changes which kernels exist and widens the graph-vs-plain gap.
    4. Batch-size-dependent kernels: each chunk size of CHUNK_BUCKETS is its own graph with
       its own kernel choices (tile sizes, split-K), so a row rolled out in a chunk of 64 and
       the same row in a chunk of 56 (the graph-free path's last chunk) can differ in the
       last bits. Within one chunk size the rows are independent (explicit noise, eval-mode
       BatchNorm), so padding cannot change a row.
    5. Triton kernels of inductor: pointwise and per-row reductions without atomics here
       (no scatter in ``predict``), deterministic for a fixed config; the autotuned config
       is picked once, at the first call, and kept.

    With (1) and (2) fixed — ``cudnn.deterministic`` on, ``cudnn.benchmark`` off,
    deterministic algorithms requested, the cuBLAS workspace fixed — and TF32 off, the
    warm-up run, the recording and every replay launch the same kernels on the same
    inputs: the frames must be bit-identical, on every call. The earlier version ran with
    cuDNN's defaults (deterministic off), no cuBLAS workspace setting, and matmul TF32 left
    on by the channels_last test before it: (1) and (2) were both open, and (1) — the
    decoder's transposed convolutions on a possibly atomic backward-data engine — is the
    likely cause (not verified on a GPU: its failure message kept no size). A failure here
    names the size of the difference and where it starts: rows of one chunk only point at
    that chunk's graph; differences from the first frame on, at the context encoding; a
    size far above rounding (≫ 1e-4), at a real fault rather than arithmetic.
    """
    torch._dynamo.reset()
    with backends(deterministic=True, benchmark=False, tf32=False):
        model = _svg(actions=True).eval()
        runs = _rollouts(model, 3)
        for later in runs[1:]:
            assert torch.equal(runs[0], later), _difference(runs[0], later)
        plain = rollout(model, *_planning_inputs(), 3, generator=torch.Generator().manual_seed(0), precision="fp32",
                        max_batch=64, cuda_graphs=False).frames
        assert torch.equal(plain, rollout(model, *_planning_inputs(), 3, generator=torch.Generator().manual_seed(0),
                                          precision="fp32", max_batch=64, cuda_graphs=False).frames)
        torch.testing.assert_close(runs[0], plain, rtol=0, atol=GRAPH_VS_PLAIN_ATOL, msg=_difference(runs[0], plain))


def test_rollout_repeatable_within_rounding_under_training_backends():
    """Under the settings training uses (cuDNN benchmark on, nondeterministic algorithms
    allowed, TF32 on) two graphed calls with the same seed may differ: (1) and (3) of the
    test above. How much: a nondeterministic kernel reorders the float32 accumulation of its
    partial sums, a few units in the last place of each output (u = 6e-8 relative); the
    rollout re-encodes each predicted frame, so 5 steps of encoder → LSTMs → decoder carry it
    on, with a gain of order 1–10 per step for these weights. 1e-4 on frames in [0, 1] holds
    that with a wide margin (≈ 1 600 u), and is 20× below the graph-vs-plain tolerance, so a
    real fault — a stale graph output, a padded row leaking into another, a wrong chunk —
    which moves frames by O(0.1), still fails."""
    torch._dynamo.reset()
    with backends(deterministic=False, benchmark=True, tf32=True):
        model = _svg(actions=True).eval()
        runs = _rollouts(model, 3)
        for later in runs[1:]:
            torch.testing.assert_close(runs[0], later, rtol=0, atol=REPEAT_ATOL, msg=_difference(runs[0], later))
        plain = rollout(model, *_planning_inputs(), 3, generator=torch.Generator().manual_seed(0), precision="fp32",
                        max_batch=64, cuda_graphs=False).frames
        torch.testing.assert_close(runs[0], plain, rtol=0, atol=GRAPH_VS_PLAIN_ATOL, msg=_difference(runs[0], plain))


def test_training_steps_make_no_host_sync_on_gpu(tmp_path, monkeypatch):
    """The real trainer on CUDA (eager, bf16, the pusher SVG): every step that writes no log
    line runs with ``torch.cuda.set_sync_debug_mode("error")``, which raises at any
    synchronising call (``.item()``, a pageable host → device copy, a stream sync)."""
    real = training_loop.train_step
    steps, log_every = 8, 4

    def step(session, batch):
        k = session.step + 1        # step 1 may set things up (cuDNN's benchmark, Adam's state)
        torch.cuda.set_sync_debug_mode("error" if k >= 2 else 0)   # on through the loop's work up to the next step
        result = real(session, batch)
        if k % log_every == 0 or k == steps:
            torch.cuda.set_sync_debug_mode(0)                      # a log step reads its metrics
        return result
    monkeypatch.setattr(training_loop, "train_step", step)
    raw = {"data": {"name": "pusher", "seq_len": 4, "num_test": 4, "num_train": 64, "action_conditioned": True},
           "model": {"name": "svg", "backbone": "dcgan64", "width": 8, "g_dim": 16, "z_dim": 2, "rnn_size": 16,
                     "n_past": 2, "n_future": 2, "n_eval": 2, "action_conditioned": True},
           "likelihood": {"name": "optimal_sigma"},
           "train": {"steps": steps, "batch_size": 4, "log_every": log_every, "eval_every": 0, "image_every": 0,
                     "checkpoint_every": 0, "eval_batches": 1, "time_limit_minutes": 60, "compile": False,
                     "out_dir": str(tmp_path / "run")}}
    try:
        train(RunConfig.from_dict(raw), progress=False)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["split"] == "train"] == [4, 8]


def test_checkpoint_written_on_gpu_loads_on_cpu(tmp_path):
    base = {
        "data": {"name": "shapes", "image_size": 16, "train_size": 32, "test_size": 8, "val_size": 8},
        "model": {"name": "conv_vae", "base_channels": 8, "latent_dim": 4},
        "likelihood": {"name": "optimal_sigma"},
        "train": {"steps": 3, "batch_size": 8, "log_every": 1, "eval_every": 0, "eval_batches": 1,
                  "image_every": 0, "checkpoint_every": 0, "out_dir": str(tmp_path / "run"), "compile": False},
    }
    train(RunConfig.from_dict(base), progress=False)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["device"].startswith("cuda")
    model, _, payload = load_model(tmp_path / "run", device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert payload["step"] == 3
    x = torch.rand(2, 1, 3, 16, 16)
    with torch.no_grad():
        assert torch.isfinite(model({"frames": x}).loss)
