"""The likelihood-head interface: the paper's "calibrated decoder" (§3, §4, App. D).

A decoder network emits *parameters* ``params[N, P, H, W]``; a head turns them into a
distribution over the pixels ``x[N, C, H, W]`` (values in [0, 1]). The head says how
many parameter channels it needs (``num_params(C)``); the network builds its last layer
to match, and never knows which head it carries. Video models flatten frames to
``N = B * T`` before calling a head, so "per image" means "per frame" there.

Every head computes in float32 with autocast disabled, whatever the caller runs under.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LOG_2PI = math.log(2.0 * math.pi)


class LikelihoodHead(nn.Module):
    """Base class. Subclasses implement ``_nll``, ``_sample``, ``_mean`` and ``num_params``.

    Attributes:
        discrete: the head models 8-bit values (x * 255 rounded); its NLL is then the
            negative ELBO term of the 8-bit data (paper Table 2/4 "discretized" metric).
        valid_bound: False when the NLL looks at ``x`` beyond the likelihood itself (the
            per-image optimal σ estimates σ from the very image it scores), so the ELBO
            it yields is not a true bound on -log p(x).
    """

    discrete: bool = False
    valid_bound: bool = True

    def num_params(self, data_channels: int) -> int:
        """Decoder output channels this head needs for ``data_channels`` image channels."""
        raise NotImplementedError

    # -- public API: float32, autocast off ------------------------------------------
    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        """Negative log-likelihood in nats, summed over every dimension: ``[N]``."""
        self._check(params, x)
        with torch.autocast(device_type=params.device.type, enabled=False):
            return self._nll(params.float(), x.float())

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A draw from p(x | params): ``[N, C, H, W]`` in [0, 1]."""
        with torch.autocast(device_type=params.device.type, enabled=False):
            return self._sample(params.float(), generator)

    def mean(self, params: Tensor) -> Tensor:
        """The image a person sees (the distribution's mean): ``[N, C, H, W]`` in [0, 1]."""
        with torch.autocast(device_type=params.device.type, enabled=False):
            return self._mean(params.float())

    def scalars(self) -> dict[str, Tensor | float]:
        """Scalar state for logs: σ and the effective β = 2σ² where they apply."""
        return {}

    def commit_pending(self, accepted: bool) -> None:
        """Apply (``accepted``) or drop the state changes recorded by training-mode ``nll``
        calls since the last call, in this head and any head nested in it (see
        :func:`commit_pending_state`). Stateless heads have nothing to do."""
        commit_pending_state(self, accepted)

    # -- to implement ----------------------------------------------------------------
    def _nll(self, params: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _sample(self, params: Tensor, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def _mean(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------
    def _check(self, params: Tensor, x: Tensor) -> None:
        if params.dim() != 4 or x.dim() != 4:
            raise ValueError("expected params [N, P, H, W] and x [N, C, H, W], "
                             f"got {tuple(params.shape)} and {tuple(x.shape)}")
        expected = self.num_params(x.shape[1])
        if params.shape[1] != expected or params.shape[0] != x.shape[0] or params.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"{type(self).__name__} needs params [N, {expected}, H, W] for x {tuple(x.shape)}, "
                f"got {tuple(params.shape)}"
            )


def commit_pending_state(module: nn.Module, accepted: bool) -> None:
    """End a training step for ``module`` and everything in it: each submodule that defines
    ``apply_pending(accepted)`` applies the state change its forward passes recorded (e.g.
    the optimal-σ EMA) when the step's update was ``accepted``, and drops it otherwise."""
    for sub in module.modules():
        hook = getattr(sub, "apply_pending", None)
        if hook is not None:
            hook(accepted)


def to_uint8_levels(x: Tensor) -> Tensor:
    """Map intensities in [0, 1] to integer levels 0..255 (long)."""
    return (x.clamp(0, 1) * 255.0).round().long()


def randn(shape: torch.Size | tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise on ``like``'s device/dtype, drawn from ``generator``."""
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def rand(shape: torch.Size | tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) noise on ``like``'s device/dtype, drawn from ``generator``."""
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
