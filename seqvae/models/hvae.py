"""Hierarchical VAE for small square images: the T = 1 case of the sequence-VAE interface.

The paper's larger image model (σ-VAE paper §5, App. B) is "the baseline hierarchical VAE
with 15 layers of latent variables, without the top-down and bottom-up connections" of
Maaløe et al. (2019, BIVA), trained on 32×32 CelebA and CIFAR-10. This module implements
that model family from scratch (no code taken from the BIVA repository):

Generative model (shared by both inference modes)::

    p(z_L) = N(0, I)
    p(z_l | z_{l+1}) = N(μ_l, diag e^{logvar_l}),  (μ_l, logvar_l) = conv-net(z_{l+1}),  l = L−1 … 1
    p(x | z_1)       = the likelihood head; the decoder emits ``head.num_params(C)`` channels

Inference (``inference=``):

* ``"bottom_up"`` (default, the paper's baseline): a Markov chain both ways,
  ``q(z_1 | x) q(z_2 | z_1) … q(z_L | z_{L−1})``. Because ``p(z_l | z_{l+1})`` and
  ``q(z_l | z_{l−1})`` condition on different samples, the KL of layers 1 … L−1 is the
  **single-sample** estimate ``log q(z_l | z_{l−1}) − log p(z_l | z_{l+1})`` at the sampled
  ``z_l`` (unbiased for the KL term of the ELBO; may be negative for one example). The top
  layer's prior is fixed, so its KL is **analytic**: ``KL(q(z_L | z_{L−1}) ‖ N(0, I))``.
* ``"top_down"``: ladder inference (Sønderby et al. 2016, LVAE). A deterministic bottom-up
  pass gives ``d_l(x)`` and a Gaussian estimate ``q̂_l`` from it; the posterior is the
  precision-weighted product of ``q̂_l`` and the generative top-down prior
  ``p(z_l | z_{l+1})`` evaluated at the posterior sample ``z_{l+1}``:
  ``q(z_l | z_{l+1}, x) ∝ q̂_l(z_l) · p(z_l | z_{l+1})``. Both Gaussians share the same
  conditioning sample, so every layer's KL is **analytic** given ``z_{l+1}``.

Either way ``kl[B, 1] = Σ_l KL_l`` and ``extras["kl_per_layer"] = [B, L]`` (nats, summed over
each layer's latent dims, float32 even under autocast).

Resolution schedule (:func:`resolution_schedule`): the ``L`` stochastic layers are split into
``num_scales`` (default 3) contiguous groups at sides ``H/2, H/4, …, H/2^num_scales``
(z_1, nearest the data, at the finest side); each group has ``L // num_scales`` layers and
the first ``L % num_scales`` groups (the finest) take one extra. For 32×32 and L = 15:
5 layers at 16×16, 5 at 8×8, 5 at 4×4. Each layer has ``latent_channels`` channels.

Networks: every conditional (q or p) and the decoder is ``conv3x3 → residual blocks →
resample (avg-pool ↓ / nearest ↑) → SiLU → conv3x3``. A residual block is
``x + conv(SiLU(conv(SiLU(x))))`` with its last conv **zero-initialised**, so each block is
the identity at initialisation and 15 layers train stably. Log-variances are soft-clamped
into [``LOGVAR_MIN``, ``LOGVAR_MAX``] with the soft clip of paper §3.1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn

from seqvae.data.spec import DataSpec
from seqvae.likelihoods.base import LOG_2PI, LikelihoodHead
from seqvae.likelihoods.gaussian import soft_clip
from seqvae.models.base import SequenceVAE
from seqvae.models.output import ELBO, gaussian_kl
from seqvae.registry import MODELS, ComponentConfig, require_at_least

LOGVAR_MIN = -8.0   # soft lower bound of every latent log-variance (σ ≥ ~0.018)
LOGVAR_MAX = 2.0    # soft upper bound (σ ≤ ~2.7)
INFERENCE_MODES = ("bottom_up", "top_down")


# ------------------------------------------------------------------ schedule
def resolution_schedule(num_layers: int, size: int, num_scales: int = 3) -> list[int]:
    """Spatial side of ``z_1 … z_L`` (index 0 is z_1, the layer next to the data).

    Layers are grouped over sides ``size/2, size/4, …, size/2**num_scales``; a group holds
    ``num_layers // num_scales`` layers, the finest ``num_layers % num_scales`` groups one more.
    ``resolution_schedule(15, 32)`` is ``[16]*5 + [8]*5 + [4]*5``.
    """
    if num_layers < 1:
        raise ValueError(f"hvae needs num_layers >= 1, got {num_layers}")
    if num_scales < 1:
        raise ValueError(f"hvae needs num_scales >= 1, got {num_scales}")
    if size % (2**num_scales) != 0:
        raise ValueError(f"image side {size} is not divisible by 2**num_scales = {2**num_scales}")
    base, extra = divmod(num_layers, num_scales)
    sizes: list[int] = []
    for group in range(num_scales):
        sizes += [size // 2 ** (group + 1)] * (base + (1 if group < extra else 0))
    return sizes


# ----------------------------------------------------------------- Gaussians
@dataclass
class DiagGaussian:
    """A diagonal Gaussian over a spatial latent ``[B, c, h, w]`` (float32 parameters)."""

    mu: Tensor
    logvar: Tensor

    @classmethod
    def from_raw(cls, raw: Tensor) -> "DiagGaussian":
        """Split a ``[B, 2c, h, w]`` net output into μ and a soft-clamped log-variance."""
        mu, logvar = raw.float().chunk(2, dim=1)
        return cls(mu, soft_clip(logvar, LOGVAR_MIN, LOGVAR_MAX))

    @classmethod
    def standard(cls, shape: tuple[int, ...], like: Tensor) -> "DiagGaussian":
        zeros = torch.zeros(shape, device=like.device, dtype=torch.float32)
        return cls(zeros, zeros)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(self.mu.shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + torch.exp(0.5 * self.logvar) * eps

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; μ, σ²) summed over the latent dims: ``[B]``."""
        z = z.float()
        elem = -0.5 * ((z - self.mu) ** 2 * torch.exp(-self.logvar) + self.logvar + LOG_2PI)
        return reduce(elem, "b c h w -> b", "sum")

    def kl(self, other: "DiagGaussian") -> Tensor:
        """Analytic KL(self ‖ other) summed over the latent dims: ``[B]``."""
        return reduce(gaussian_kl(self.mu, self.logvar, other.mu, other.logvar), "b c h w -> b", "sum")


def precision_weighted(a: DiagGaussian, b: DiagGaussian) -> DiagGaussian:
    """The normalised product N(μ_a, σ_a²)·N(μ_b, σ_b²) (LVAE's precision-weighted merge)."""
    logvar = -torch.logaddexp(-a.logvar, -b.logvar)
    mu = a.mu * torch.exp(logvar - a.logvar) + b.mu * torch.exp(logvar - b.logvar)
    return DiagGaussian(mu, logvar)


@dataclass
class LayerState:
    """One stochastic layer of a posterior pass (z_l, its q and p, and its KL ``[B]``)."""

    z: Tensor
    q: DiagGaussian
    p: DiagGaussian
    kl: Tensor
    analytic: bool


# ------------------------------------------------------------------ networks
def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


class ResBlock(nn.Module):
    """``x + conv(SiLU(conv(SiLU(x))))`` with the last conv zero-initialised (identity at init)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(channels, channels)
        self.conv2 = _conv3x3(channels, channels)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class Stage(nn.Module):
    """``conv3x3(in→ch) → blocks → resample in_size→out_size → post_blocks``: features ``[B, ch, out, out]``."""

    def __init__(self, in_ch: int, ch: int, blocks: int, in_size: int, out_size: int, post_blocks: int = 0) -> None:
        super().__init__()
        if max(in_size, out_size) % min(in_size, out_size) != 0:
            raise ValueError(f"cannot resample {in_size} -> {out_size}")
        self.inp = _conv3x3(in_ch, ch)
        self.blocks = nn.Sequential(*[ResBlock(ch) for _ in range(blocks)])
        self.post = nn.Sequential(*[ResBlock(ch) for _ in range(post_blocks)])
        self.in_size, self.out_size = in_size, out_size

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(self.inp(x))
        if self.out_size < self.in_size:
            h = F.avg_pool2d(h, self.in_size // self.out_size)
        elif self.out_size > self.in_size:
            h = F.interpolate(h, scale_factor=self.out_size // self.in_size, mode="nearest")
        return self.post(h)


class Head(nn.Module):
    """``SiLU → conv3x3(ch → out)`` on top of a stage's features."""

    def __init__(self, ch: int, out: int) -> None:
        super().__init__()
        self.conv = _conv3x3(ch, out)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(F.silu(h))


# -------------------------------------------------------------------- config
@dataclass
class HVAEConfig(ComponentConfig):
    """Hierarchical VAE (paper App. B baseline: 15 layers, bottom-up Markov inference)."""

    name: str = "hvae"
    num_layers: int = 15           # stochastic layers L
    channels: int = 64             # feature width of every conv net
    latent_channels: int = 8       # channels of each spatial latent z_l
    blocks: int = 2                # residual blocks per conditional net
    num_scales: int = 3            # resolution groups: sides H/2 … H/2**num_scales (needs H divisible by 2**num_scales)
    inference: str = "bottom_up"   # bottom_up (Markov q(z_l|z_{l-1}), the paper's baseline) | top_down (LVAE ladder)

    def __post_init__(self) -> None:
        """Every check of these settings (the model checks only what needs the data spec)."""
        require_at_least(self, "model", 1, "num_layers", "channels", "latent_channels", "num_scales")
        require_at_least(self, "model", 0, "blocks")
        if self.inference not in INFERENCE_MODES:
            raise ValueError(f"model.inference must be one of {', '.join(INFERENCE_MODES)}, got {self.inference!r}")


# --------------------------------------------------------------------- model
class HVAE(SequenceVAE):
    """Hierarchical VAE with ``L`` spatial Gaussian layers (see the module docstring)."""

    def __init__(self, cfg: HVAEConfig, head: LikelihoodHead, spec: DataSpec) -> None:
        """The model ``cfg`` describes for single square images of ``spec`` whose side is divisible
        by ``2**cfg.num_scales``. ``cfg`` is checked by its own ``__post_init__``; only what needs
        the data spec is checked here."""
        super().__init__()
        if spec.seq_len != 1:
            raise ValueError(f"hvae is an image model (seq_len 1); the data set yields seq_len {spec.seq_len}")
        factor = 2**cfg.num_scales
        if spec.height != spec.width or spec.height % factor != 0:
            raise ValueError(
                f"hvae supports square images whose side is divisible by {factor} (2**model.num_scales), "
                f"e.g. 32×32 with latents at 16, 8, 4; got {spec.height}×{spec.width}"
            )
        self.cfg = cfg
        self.likelihood = head
        self.spec = spec
        self.inference, self.latent_channels = cfg.inference, cfg.latent_channels
        self.sizes = resolution_schedule(cfg.num_layers, spec.height, cfg.num_scales)
        L, C, H = cfg.num_layers, spec.channels, spec.height
        lc, ch, blocks = cfg.latent_channels, cfg.channels, cfg.blocks
        s = self.sizes

        # generative: priors[l] gives p(z_{l+1} | z_{l+2}) in 1-based names, i.e. index l
        # (0-based) conditions on z at index l + 1; decoder gives p(x | z_1)
        self.prior_nets = nn.ModuleList(
            nn.Sequential(Stage(lc, ch, blocks, s[layer + 1], s[layer]), Head(ch, 2 * lc)) for layer in range(L - 1)
        )
        self.decoder = nn.Sequential(
            Stage(lc, ch, blocks, s[0], H, post_blocks=max(1, blocks // 2)), Head(ch, head.num_params(C))
        )
        if cfg.inference == "bottom_up":
            # q(z_1 | x), q(z_l | z_{l-1})
            self.q_nets = nn.ModuleList(
                [nn.Sequential(Stage(C, ch, blocks, H, s[0]), Head(ch, 2 * lc))]
                + [nn.Sequential(Stage(lc, ch, blocks, s[layer - 1], s[layer]), Head(ch, 2 * lc))
                   for layer in range(1, L)]
            )
        else:
            # deterministic ladder d_1(x) … d_L(x) and the Gaussian estimates q̂_l from them
            self.ladder = nn.ModuleList(
                [Stage(C, ch, blocks, H, s[0])]
                + [Stage(ch, ch, blocks, s[layer - 1], s[layer]) for layer in range(1, L)]
            )
            self.ladder_heads = nn.ModuleList(Head(ch, 2 * lc) for _ in range(L))

    @property
    def num_layers(self) -> int:
        return len(self.sizes)

    # -------------------------------------------------------------- pieces
    def _frames(self, batch: dict[str, Tensor]) -> Tensor:
        frames = batch["frames"]
        expected = (1, self.spec.channels, self.spec.height, self.spec.width)
        if frames.dim() != 5 or tuple(frames.shape[1:]) != expected:
            raise ValueError(f"hvae expects frames [B, {', '.join(map(str, expected))}], got {tuple(frames.shape)}")
        return rearrange(frames, "b 1 c h w -> b c h w")

    def _top_prior(self, batch_size: int, like: Tensor) -> DiagGaussian:
        side = self.sizes[-1]
        return DiagGaussian.standard((batch_size, self.latent_channels, side, side), like)

    def prior(self, index: int, z_above: Tensor) -> DiagGaussian:
        """p(z at ``index`` | z at ``index + 1``), 0-based (index 0 is z_1)."""
        return DiagGaussian.from_raw(self.prior_nets[index](z_above))

    def decode(self, z1: Tensor) -> Tensor:
        """Likelihood-head parameters ``[B, P, H, W]`` from z_1."""
        return self.decoder(z1)

    def posterior(self, x: Tensor, generator: torch.Generator | None = None) -> list[LayerState]:
        """Sample every layer of q(z | x) for images ``x[B, C, H, W]`` in [0, 1]; index 0 is z_1."""
        h = x * 2.0 - 1.0
        if self.inference == "bottom_up":
            return self._posterior_bottom_up(h, generator)
        return self._posterior_top_down(h, generator)

    def _posterior_bottom_up(self, h: Tensor, generator: torch.Generator | None) -> list[LayerState]:
        L = self.num_layers
        qs: list[DiagGaussian] = []
        zs: list[Tensor] = []
        inp = h
        for net in self.q_nets:                       # q(z_1 | x), q(z_2 | z_1), …
            q = DiagGaussian.from_raw(net(inp))
            z = q.sample(generator)
            qs.append(q)
            zs.append(z)
            inp = z
        states = []
        for layer in range(L - 1):                    # single-sample KL of the Markov layers
            p = self.prior(layer, zs[layer + 1])
            kl = qs[layer].log_prob(zs[layer]) - p.log_prob(zs[layer])
            states.append(LayerState(zs[layer], qs[layer], p, kl, analytic=False))
        p_top = self._top_prior(h.shape[0], h)         # analytic KL of the top layer
        states.append(LayerState(zs[-1], qs[-1], p_top, qs[-1].kl(p_top), analytic=True))
        return states

    def _posterior_top_down(self, h: Tensor, generator: torch.Generator | None) -> list[LayerState]:
        L = self.num_layers
        features = []
        for stage in self.ladder:                     # d_1(x) … d_L(x)
            h = stage(h)
            features.append(h)
        states: list[LayerState] = []
        z: Tensor | None = None
        for layer in reversed(range(L)):              # z_L … z_1, sharing the generative path
            p = self._top_prior(h.shape[0], h) if z is None else self.prior(layer, z)
            q_hat = DiagGaussian.from_raw(self.ladder_heads[layer](features[layer]))
            q = precision_weighted(q_hat, p)
            z = q.sample(generator)
            states.append(LayerState(z, q, p, q.kl(p), analytic=True))
        return states[::-1]

    # ------------------------------------------------------------ interface
    def forward(self, batch: dict[str, Tensor]) -> ELBO:
        x = self._frames(batch)
        states = self.posterior(x)
        nll = self.likelihood.nll(self.decode(states[0].z), x)                 # [B]
        kl_layers = torch.stack([s.kl for s in states], dim=1)                 # [B, L]
        return ELBO(
            nll=rearrange(nll, "b -> b 1"),
            kl=reduce(kl_layers, "b l -> b 1", "sum"),
            dims=self.spec.frame_dims,
            valid_bound=self.likelihood.valid_bound,
            extras={"kl_per_layer": kl_layers},
        )

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Tensor]) -> Tensor:
        """Head mean given one posterior sample: ``[B, 1, C, H, W]``."""
        states = self.posterior(self._frames(batch))
        return rearrange(self.likelihood.mean(self.decode(states[0].z)), "b c h w -> b 1 c h w")

    @torch.no_grad()
    def generate(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """Ancestral sample z_L ~ N(0, I) → … → z_1 → head mean: ``[B, 1, C, H, W]``.

        Uses only the batch's size and device; all noise comes from ``generator``.
        """
        frames = batch["frames"]
        z = self._top_prior(frames.shape[0], frames).sample(generator)
        for layer in reversed(range(self.num_layers - 1)):
            z = self.prior(layer, z).sample(generator)
        return rearrange(self.likelihood.mean(self.decode(z)), "b c h w -> b 1 c h w")


@MODELS.register("hvae", HVAEConfig)
def build_hvae(cfg: HVAEConfig, head: LikelihoodHead, spec: DataSpec) -> HVAE:
    """The registered factory: :class:`HVAE` for ``spec`` (square images, side divisible by 2**num_scales, T = 1)."""
    return HVAE(cfg, head, spec)
