"""Batched conditional rollouts of a video predictor, the inner loop of visual MPC (Finn &
Levine 2017): ``S`` futures for each of ``K`` candidate action sequences per context,
drawn from the model's learned prior (SVG-LP, Denton & Fergus 2018, §3) in one chunked,
no-grad, eval-mode pass, with common random numbers across candidates (see
:func:`rollout`)."""
from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import Tensor

from seqvae import amp
from seqvae.io import frames_to_float
from seqvae.models.base import SteppedPredictor, VideoPredictor, eval_mode
from seqvae.nets.fusion import fold_batchnorm

# cost_fn(frames[n, horizon, C, H, W] float in [0, 1], index[n, 3] long: (b, k, s) of each row) -> costs[n]
CostFn = Callable[[Tensor, Tensor], Tensor]

DEFAULT_CPU_BUDGET = 2 << 30      # bytes of working memory for auto-chunking on CPU
GPU_BUDGET_FRACTION = 0.5         # ... and this share of the free memory on a GPU
# Chunk sizes of the CUDA-graph path: every chunk is padded up to one of these (powers of two:
# the last chunk is padded by less than 2×), so a planner whose row count changes between
# calls still compiles and replays at most len(CHUNK_BUCKETS) graphs.
CHUNK_BUCKETS = tuple(2 ** i for i in range(3, 14))   # 8 .. 8192


def plan_chunks(n_rows: int, max_batch: int, buckets: tuple[int, ...] = CHUNK_BUCKETS) -> list[tuple[int, int, int]]:
    """Fixed-shape chunks for ``n_rows`` rows: ``(lo, hi, size)`` per chunk, rows ``lo..hi-1``
    padded up to ``size`` rows.

    The full chunk size is the largest bucket that fits ``max_batch`` (``max_batch`` itself
    when it is below the smallest bucket); the last, partial chunk takes the smallest
    bucket (not above the full size) that holds it. So the sizes come from a small fixed
    set, whatever ``n_rows`` is, and the last chunk is padded by less than 2× its rows.
    """
    if n_rows < 0 or max_batch < 1:
        raise ValueError(f"need n_rows >= 0 and max_batch >= 1, got {n_rows}, {max_batch}")
    fitting = [b for b in sorted(buckets) if b <= max_batch]
    full = fitting[-1] if fitting else max_batch
    sizes = [b for b in sorted(buckets) if b <= full] or [full]
    chunks = []
    for lo in range(0, n_rows, full):
        hi = min(n_rows, lo + full)
        size = full if hi - lo == full else next((b for b in sizes if b >= hi - lo), full)
        chunks.append((lo, hi, size))
    return chunks


_GRAPHED: "weakref.WeakKeyDictionary[VideoPredictor, Callable]" = weakref.WeakKeyDictionary()


def _graphed_predict(model: VideoPredictor) -> Callable:
    """``model.predict`` compiled with ``mode="reduce-overhead"`` (CUDA graphs, one per chunk
    shape), made once per model."""
    fn = _GRAPHED.get(model)
    if fn is None:
        from seqvae.compiled import with_rnn

        fn = _GRAPHED[model] = with_rnn(torch.compile(model.predict, mode="reduce-overhead", dynamic=False))
    return fn


def rollout_copy(model: VideoPredictor) -> VideoPredictor:
    """A copy of ``model`` made for many rollouts (a planner's): in eval mode, each BatchNorm
    folded into the convolution before it (:func:`seqvae.nets.fusion.fold_batchnorm`) and
    the weights in channels_last, which oneDNN's CPU convolutions run faster (the shipped
    ``pusher-actions`` model, 100 candidates × 10 frames in bf16 on one thread: 1.4× less
    CPU time). The same function up to rounding; the copy does not follow later changes of
    ``model``. A model with no BatchNorm (e.g. a simulator posing as a video model) is
    returned as it is, not copied."""
    if not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        return model
    fast = copy.deepcopy(model).eval()
    fold_batchnorm(fast)
    return fast.to(memory_format=torch.channels_last)


@dataclass
class RolloutResult:
    """What :func:`rollout` returns.

    Attributes:
        frames: predicted frames ``[B, K, S, horizon, C, H, W]`` float32 in [0, 1]
            (None with ``return_frames=False``).
        costs: ``cost_fn`` of every rollout ``[B, K, S]`` float32 (None without a cost_fn).
        noise: the latent noise used, ``[B, S, n_ctx - 1 + horizon, z_dim]`` (shared by
            the K candidates; None for a deterministic model).
    """

    frames: Tensor | None
    costs: Tensor | None
    noise: Tensor | None = None


def auto_max_batch(model: VideoPredictor, horizon: int, device: torch.device, keep_frames: bool,
                   budget_bytes: int | None = None) -> int:
    """Rows per chunk that fit ``budget_bytes`` (default: 2 GiB on CPU, half the free GPU
    memory), by the model's own ``rollout_row_bytes``."""
    if budget_bytes is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget_bytes = int(free * GPU_BUDGET_FRACTION)
        else:
            budget_bytes = DEFAULT_CPU_BUDGET
    return max(1, budget_bytes // max(1, model.rollout_row_bytes(horizon, keep_frames)))


def _check_inputs(model: VideoPredictor, context: Tensor, actions: Tensor | None, horizon: int | None,
                  context_actions: Tensor | None, num_samples: int) -> tuple[int, int, int]:
    """Validate shapes; return ``(K, horizon, action_dim)``."""
    if context.dim() != 5:
        raise ValueError(f"context must be [B, n_ctx, C, H, W], got shape {tuple(context.shape)}")
    b, n_ctx = context.shape[:2]
    if b < 1 or n_ctx < 1:
        raise ValueError(f"context needs at least one sequence and one frame, got shape {tuple(context.shape)}")
    spec = model.spec
    if tuple(context.shape[2:]) != (spec.channels, spec.height, spec.width):
        raise ValueError(f"context frames are {tuple(context.shape[2:])} but the model was built for "
                         f"{(spec.channels, spec.height, spec.width)} (C, H, W)")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    a_dim = model.action_dim
    if a_dim == 0:
        if actions is not None:
            raise ValueError("this model is not action-conditioned: pass actions=None and horizon=N "
                             "(it predicts one stochastic future per sample)")
        if context_actions is not None:
            raise ValueError("this model is not action-conditioned: context_actions must be None")
        if horizon is None or horizon < 1:
            raise ValueError(f"an action-free model needs horizon >= 1, got {horizon}")
        return 1, horizon, 0
    if actions is None:
        raise ValueError(f"this model is action-conditioned (action_dim {a_dim}): "
                         f"pass actions [B, K, horizon, {a_dim}]")
    if actions.dim() != 4 or actions.shape[0] != b or actions.shape[-1] != a_dim or actions.shape[1] < 1 \
            or actions.shape[2] < 1:
        raise ValueError(f"actions must be [B={b}, K, horizon, A={a_dim}] with K, horizon >= 1, "
                         f"got shape {tuple(actions.shape)}")
    if horizon is not None and horizon != actions.shape[2]:
        raise ValueError(f"horizon={horizon} but the actions cover {actions.shape[2]} steps")
    if context_actions is not None and tuple(context_actions.shape) != (b, n_ctx - 1, a_dim):
        raise ValueError(f"context_actions must be [B={b}, n_ctx - 1={n_ctx - 1}, A={a_dim}], "
                         f"got shape {tuple(context_actions.shape)}")
    return actions.shape[1], actions.shape[2], a_dim


def _dream_from_shared_context(model: SteppedPredictor, ctx: Tensor, n_ctx: int, horizon: int, num_samples: int,
                               bi: Tensor, si: Tensor, actions: Tensor | None, noise: Tensor | None,
                               generator: torch.Generator | None) -> Tensor:
    """``model.predict(ctx[bi], horizon, actions, noise=noise)`` for a chunk of rows, with each
    distinct context row ``(b, s)`` taken in once (:meth:`~seqvae.models.base.SteppedPredictor.begin`)
    and its state copied to the rows that start from it."""
    starts, row_start = torch.unique(bi * num_samples + si, return_inverse=True)
    b0 = starts // num_samples
    # the context's actions and latents are the same for every candidate of a (b, s): take any row's
    row_of_start = torch.zeros_like(starts).scatter_(0, row_start, torch.arange(bi.numel(), device=bi.device))
    ctx_actions = None if actions is None else actions[row_of_start, : n_ctx - 1]
    ctx_noise = None if noise is None else noise[row_of_start, : n_ctx - 1]
    state = model.begin(ctx[b0], ctx_actions, generator, ctx_noise)
    return model.dream(state.take(row_start), horizon, None if actions is None else actions[:, n_ctx - 1 :],
                       generator, False, None if noise is None else noise[:, n_ctx - 1 :])


@torch.no_grad()
def rollout(model: VideoPredictor, context: Tensor, actions: Tensor | None = None, num_samples: int = 1, *,
            generator: torch.Generator | None, horizon: int | None = None, context_actions: Tensor | None = None,
            cost_fn: CostFn | None = None, max_batch: int | None = None, return_frames: bool = True,
            precision: str = "auto", memory_budget: int | None = None, noise: Tensor | None = None,
            cuda_graphs: bool | None = None) -> RolloutResult:
    """Sample ``num_samples`` futures for each of ``K`` candidate action sequences.

    Common random numbers
    ---------------------
    The latent noise is drawn up front from the ``generator`` as ``[B, S, n_ctx - 1 +
    horizon, z_dim]`` and SHARED by the ``K`` candidates: candidates ``k`` and ``k'`` of the
    same ``(b, s)`` see the same noise. Cost differences between candidates then reflect the
    actions, not the luck of the draw, and — since with explicit noise each row of
    :meth:`SVG.predict` depends on its own row only — a call with ``K`` candidates returns
    exactly what ``K`` separate calls (same seed) return, and chunking does not change the
    result (up to the convolution kernels the backend picks per batch size).

    Actions
    -------
    ``actions[b, k, j]`` moves frame ``n_ctx - 1 + j`` to frame ``n_ctx + j`` (the first one
    acts on the last context frame). An action-conditioned model also needs the actions that
    led through the context, ``context_actions[B, n_ctx - 1, A]`` (``context_actions[:, t]``
    moved context frame ``t`` to ``t + 1``); they default to zeros, which is right when the
    scene was still (e.g. the first frame repeated) and only an approximation otherwise —
    pass the real ones when you have them. Action-free models take ``actions=None`` and an
    explicit ``horizon`` (one "candidate", K = 1).

    Args:
        model: a :class:`~seqvae.models.base.VideoPredictor` (e.g. :class:`seqvae.models.svg.SVG`).
        context: observed frames ``[B, n_ctx, C, H, W]``, float in [0, 1] or uint8.
        actions: candidates ``[B, K, horizon, A]`` (``actions[:, :, 0]`` acts on the last
            context frame); None for an action-free model (then K = 1).
        num_samples: ``S`` futures per candidate (latent samples from the prior).
        generator: source of all the randomness (None: the global RNG). The noise is
            drawn on the generator's device, so a CPU generator reproduces on any device.
        horizon: predicted frames; required without actions, else taken from them.
        context_actions: ``[B, n_ctx - 1, A]`` actions that led through the context
            (default zeros: a still scene); only for action-conditioned models.
        cost_fn: ``cost_fn(frames[n, horizon, C, H, W], index[n, 3]) -> [n]``, applied
            chunk by chunk (so frames need not be kept); ``index`` holds each rollout's
            ``(b, k, s)``: its context row (e.g. for per-row goals), candidate and sample.
        max_batch: rollouts per model call (None: chosen to fit ``memory_budget``).
        return_frames: keep the predicted frames (``False`` saves memory when only the
            costs are needed, as in planning).
        precision: ``auto`` (bf16/fp16 autocast on a GPU; on a CPU bf16 where it computes
            bf16 natively, else fp32), ``fp32``, ``bf16`` or ``fp16`` (GPU only); see
            :mod:`seqvae.amp`. Under bf16 the kernels (and so the rounding) may differ with
            the batch size: rollouts chunked differently agree to bf16 rounding, not 1e-5.
        memory_budget: bytes for auto-chunking (default 2 GiB on CPU, half the free GPU memory).
        noise: the latent noise ``[B, S, n_ctx - 1 + horizon, z_dim]`` to use instead of drawing
            it from ``generator`` (e.g. one draw for many samples, rolled out in slices).
        cuda_graphs: the fixed-shape path (None: on CUDA only): rows go in chunks padded to
            :data:`CHUNK_BUCKETS` sizes (:func:`plan_chunks`; padding repeats the last row and
            is dropped), and on CUDA ``model.predict`` runs compiled with
            ``mode="reduce-overhead"`` (captured as CUDA graphs, one per chunk size). With
            ``True`` on a CPU the same padded chunks run eagerly (how the padding is tested);
            with ``False`` (the CPU default) chunks are plain slices, as before.
            Repeated calls with the same seed are bit-identical on CUDA only with fixed
            algorithms (``torch.backends.cudnn.deterministic = True``, ``benchmark`` off,
            ``CUBLAS_WORKSPACE_CONFIG`` set): the transposed convolutions of the decoders run
            cuDNN's backward-data kernels, some of which add partial sums atomically. Under
            the training settings (benchmark, TF32) they agree to rounding (see tests/test_cuda.py).
    Returns:
        :class:`RolloutResult` with ``frames [B, K, S, horizon, C, H, W]`` and ``costs [B, K, S]``.
    """
    k, horizon, a_dim = _check_inputs(model, context, actions, horizon, context_actions, num_samples)
    device = context.device
    param = next(iter([*model.parameters(), *model.buffers()]), None)
    if param is not None and param.device != device:
        raise ValueError(f"the context is on {device} but the model is on {param.device}; move one of them")
    b, n_ctx = context.shape[:2]
    s = num_samples
    frame_shape = tuple(context.shape[2:])
    ctx = frames_to_float(context)
    dtype = amp.resolve(precision, device)

    # Latent noise for all rollouts, drawn once and shared by the K candidates.
    z_dim = model.z_dim
    if noise is not None:
        if not z_dim or tuple(noise.shape) != (b, s, n_ctx - 1 + horizon, z_dim):
            raise ValueError(f"noise must be [B={b}, S={s}, n_ctx - 1 + horizon={n_ctx - 1 + horizon}, z_dim={z_dim}], "
                             f"got {tuple(noise.shape)}")
        noise = noise.to(device)
    elif z_dim:
        gen_device = generator.device if generator is not None else device
        noise = torch.randn(b, s, n_ctx - 1 + horizon, z_dim, generator=generator, device=gen_device).to(device)

    # Full action sequences per candidate: the context's, then the candidate's.
    full_actions = None
    if a_dim:
        ca = context_actions if context_actions is not None else ctx.new_zeros(b, n_ctx - 1, a_dim)
        ca = repeat(ca.to(device, torch.float32), "b t a -> b k t a", k=k)
        full_actions = torch.cat([ca, actions.to(device, torch.float32)], dim=2)   # [B, K, n_ctx-1+horizon, A]

    n_rows = b * k * s
    if max_batch is None:
        max_batch = auto_max_batch(model, horizon, device, return_frames, memory_budget)
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")

    # Row r = ((b·K) + k)·S + s; rows are gathered per chunk (no B·K·S copies of the context).
    frames_out = torch.empty(n_rows, horizon, *frame_shape, device=device) if return_frames else None
    costs_out = torch.empty(n_rows, device=device) if cost_fn is not None else None
    if cuda_graphs is None:
        cuda_graphs = device.type == "cuda"
    if cuda_graphs:
        chunks = plan_chunks(n_rows, max_batch)
        predict = _graphed_predict(model) if device.type == "cuda" else model.predict
    else:  # the graph-free path: plain slices of max_batch rows
        chunks = [(lo, min(n_rows, lo + max_batch), min(n_rows, lo + max_batch) - lo)
                  for lo in range(0, n_rows, max_batch)]
        predict = model.predict
    # Rows of one (b, s) share their context (and its latents): a stepped model takes it in
    # once per chunk and hands the state to the K candidates (not under CUDA graphs, which
    # capture predict whole).
    shared_context = not cuda_graphs and k > 1 and isinstance(model, SteppedPredictor)
    with eval_mode(model):
        for lo, hi, size in chunks:
            rows = torch.arange(lo, hi, device=device)
            padded = torch.cat([rows, rows[-1:].expand(size - rows.numel())]) if size > rows.numel() else rows
            bi, ki, si = padded // (k * s), (padded // s) % k, padded % s
            chunk_actions = None if full_actions is None else full_actions[bi, ki]
            chunk_noise = None if noise is None else noise[bi, si]
            if cuda_graphs and device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()   # the previous chunk's graph outputs are copied out
            with amp.autocast(device, dtype):
                if shared_context:
                    pred = _dream_from_shared_context(model, ctx, n_ctx, horizon, s, bi, si, chunk_actions,
                                                      chunk_noise, generator)
                else:
                    # with explicit noise the generator is not used; a graph gets no Generator object
                    pred = predict(ctx[bi], horizon, chunk_actions,
                                   generator=None if cuda_graphs and noise is not None else generator,
                                   noise=chunk_noise)
            pred = pred[: rows.numel()].float().clamp(0.0, 1.0)                 # [n, horizon, C, H, W], a copy
            bi, ki, si = bi[: rows.numel()], ki[: rows.numel()], si[: rows.numel()]
            if frames_out is not None:
                frames_out[rows] = pred
            if costs_out is not None:
                c = cost_fn(pred, torch.stack([bi, ki, si], 1))
                if not isinstance(c, Tensor) or c.shape != (rows.numel(),):
                    got = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
                    raise ValueError(f"cost_fn must return a tensor [n={rows.numel()}] (one cost per rollout), "
                                     f"got {got}")
                costs_out[rows] = c.float().to(device)
            del pred
    frames = None
    if frames_out is not None:
        frames = rearrange(frames_out, "(b k s) t c h w -> b k s t c h w", b=b, k=k)
    costs = None if costs_out is None else rearrange(costs_out, "(b k s) -> b k s", b=b, k=k)
    return RolloutResult(frames=frames, costs=costs, noise=noise)
