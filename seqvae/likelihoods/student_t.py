"""Student-t decoder with a learned shared scale and degrees of freedom (paper Table 2, [2]).

Takahashi et al. (2018) replace the Gaussian decoder by a Student-t; as in the shared σ
head (paper Eq. 2–3) the scale ``s`` and the degrees of freedom ``ν`` are single learned
scalars, and the network outputs only the location μ (``sigmoid`` of the raw output,
like the Gaussian heads). Per-dimension NLL::

    −log Γ((ν+1)/2) + log Γ(ν/2) + ½·log(νπ) + log s + (ν+1)/2 · log(1 + ((x−μ)/s)²/ν)

summed over every pixel and channel. ``ν = 2 + softplus(ρ)``: kept above 2 so that the
variance ``σ² = s²·ν/(ν−2)`` exists; ``scalars()`` reports that σ and the effective
β = 2σ² (§5.1) so the head can be compared with the Gaussian σ-VAE.

Sampling draws standard t variates with Bailey's (1994) polar method — uniforms only, so
every draw comes from the passed ``torch.Generator`` (``torch.distributions.StudentT``
samples through ``_standard_gamma``, which takes no generator).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import reduce
from torch import Tensor, nn

from seqvae.likelihoods.base import LikelihoodHead, rand
from seqvae.likelihoods.gaussian import mean_activation
from seqvae.registry import LIKELIHOODS, ComponentConfig

MIN_DF = 2.0


def inverse_softplus(y: float) -> float:
    """ρ with softplus(ρ) = y (y > 0), stable for large y."""
    return y + math.log(-math.expm1(-y))


def student_t_nll(x: Tensor, loc: Tensor, log_scale: Tensor, df: Tensor) -> Tensor:
    """Elementwise Student-t NLL in nats (broadcasting the scalars)."""
    z = (x - loc) * torch.exp(-log_scale)
    log_norm = torch.lgamma(0.5 * (df + 1)) - torch.lgamma(0.5 * df) - 0.5 * torch.log(df * math.pi)
    return 0.5 * (df + 1) * torch.log1p(z**2 / df) + log_scale - log_norm


def standard_t(shape: torch.Size, df: Tensor, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard Student-t draws by Bailey's polar rejection method (acceptance π/4).

    Draw U, V ~ U(−1, 1) until W = U² + V² ≤ 1; then T = U·√(ν·(W^(−2/ν) − 1)/W).
    """
    out = torch.zeros(shape, device=like.device, dtype=like.dtype)
    todo = torch.ones(shape, device=like.device, dtype=torch.bool)
    while bool(todo.any()):
        u = 2.0 * rand(shape, like, generator) - 1.0
        v = 2.0 * rand(shape, like, generator) - 1.0
        w = u**2 + v**2
        accept = todo & (w <= 1.0) & (w > 0.0)
        w = torch.where(accept, w, torch.ones_like(w))  # keep the rejected lanes finite
        t = u * torch.sqrt(df * torch.expm1(-2.0 / df * torch.log(w)) / w)
        out = torch.where(accept, t, out)
        todo = todo & ~accept
    return out


class StudentTHead(LikelihoodHead):
    """Per-pixel location; one learned log-scale and one learned ν for the whole image."""

    def __init__(self, init_log_scale: float = 0.0, init_df: float = 5.0,
                 mean_activation: str = "sigmoid") -> None:
        super().__init__()
        if not init_df > MIN_DF:
            raise ValueError(f"init_df must exceed {MIN_DF} (the variance needs ν > 2), got {init_df}")
        _check_activation(mean_activation)
        self.mean_activation = mean_activation
        self.log_scale = nn.Parameter(torch.tensor(float(init_log_scale)))
        self.df_raw = nn.Parameter(torch.tensor(inverse_softplus(init_df - MIN_DF)))

    def num_params(self, data_channels: int) -> int:
        return data_channels

    def df(self) -> Tensor:
        """Degrees of freedom ν = 2 + softplus(ρ) > 2."""
        return MIN_DF + F.softplus(self.df_raw.float())

    def _loc(self, params: Tensor) -> Tensor:
        return mean_activation(params, self.mean_activation)

    def _nll(self, params: Tensor, x: Tensor) -> Tensor:
        nll = student_t_nll(x, self._loc(params), self.log_scale.float(), self.df())
        return reduce(nll, "n c h w -> n", "sum")

    def _mean(self, params: Tensor) -> Tensor:
        return self._loc(params).clamp(0, 1)

    def _sample(self, params: Tensor, generator: torch.Generator | None) -> Tensor:
        loc = self._loc(params)
        with torch.no_grad():
            t = standard_t(loc.shape, self.df().detach(), loc, generator)
        return (loc + self.log_scale.float().exp() * t).clamp(0, 1)

    def scalars(self) -> dict[str, Tensor]:
        with torch.no_grad():
            scale, df = self.log_scale.float().exp(), self.df()
            sigma = scale * torch.sqrt(df / (df - MIN_DF))
        return {"scale": scale, "df": df, "sigma": sigma, "beta_eff": 2 * sigma**2}


def _check_activation(name: str) -> None:
    mean_activation(torch.zeros(()), name)  # raises ValueError for an unknown name


@dataclass
class StudentTConfig(ComponentConfig):
    name: str = "student_t"
    init_log_scale: float = 0.0     # log s at the start (s: the t distribution's scale)
    init_df: float = 5.0            # ν at the start; must exceed 2
    mean_activation: str = "sigmoid"


@LIKELIHOODS.register("student_t", StudentTConfig)
def build_student_t(cfg: StudentTConfig) -> LikelihoodHead:
    return StudentTHead(cfg.init_log_scale, cfg.init_df, cfg.mean_activation)
