"""The paper's small convolutional VAE (App. B) as the T = 1 sequence VAE.

Encoder: 3 conv layers (4×4, stride 2) from ``base_channels`` doubling each layer, then a
fully connected layer to the mean and log-variance of a ``latent_dim``-dim Gaussian
(20 in the paper). Decoder: the mirror — a fully connected layer, then 3 transposed
convs, the last one emitting the channels the likelihood head asks for. Works for 28×28
(SVHN/MNIST as in the paper) and 32×32 inputs (any size ≥ 8): transposed convs get the
output padding that restores each encoder size exactly. Prior N(0, I).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from seqvae.data.spec import DataSpec
from seqvae.likelihoods.base import LikelihoodHead
from seqvae.models.base import SingleLatentVAE
from seqvae.models.output import ELBO, gaussian_kl
from seqvae.registry import MODELS, ComponentConfig, require_at_least


def _conv_out(size: int) -> int:
    """Spatial size after a 4×4, stride-2, padding-1 conv."""
    return (size + 2 - 4) // 2 + 1


@dataclass
class ConvVAEConfig(ComponentConfig):
    """App. B small conv VAE: 3 conv layers from 32 channels doubling, 20-dim latent."""

    name: str = "conv_vae"
    base_channels: int = 32
    latent_dim: int = 20
    num_layers: int = 3

    def __post_init__(self) -> None:
        require_at_least(self, "model", 1, "base_channels", "latent_dim", "num_layers")


class ConvVAE(SingleLatentVAE):
    """The App. B conv VAE that ``cfg`` describes, for single images of ``spec``."""

    def __init__(self, cfg: ConvVAEConfig, head: LikelihoodHead, spec: DataSpec) -> None:
        """``cfg`` is checked by its own ``__post_init__``; only what needs the data spec is checked here."""
        super().__init__()
        num_layers = cfg.num_layers
        if spec.seq_len != 1:
            raise ValueError(f"conv_vae models single images (seq_len 1); the data gives sequences of {spec.seq_len}")
        if spec.height < 2**num_layers or spec.width < 2**num_layers:
            raise ValueError(f"conv_vae with {num_layers} layers needs images of at least {2**num_layers} px, "
                             f"got {spec.height}×{spec.width}")
        self.cfg = cfg
        self.likelihood = head
        self.spec = spec
        self.latent_dim = cfg.latent_dim
        widths = [cfg.base_channels * 2**i for i in range(num_layers)]
        sizes = [(spec.height, spec.width)]
        for _ in range(num_layers):
            sizes.append((_conv_out(sizes[-1][0]), _conv_out(sizes[-1][1])))
        self.bottom = (widths[-1], *sizes[-1])
        flat = widths[-1] * sizes[-1][0] * sizes[-1][1]

        enc, in_ch = [], spec.channels
        for width in widths:
            enc += [nn.Conv2d(in_ch, width, 4, 2, 1), nn.ReLU()]
            in_ch = width
        self.encoder = nn.Sequential(*enc)
        self.to_posterior = nn.Linear(flat, 2 * cfg.latent_dim)

        self.from_latent = nn.Linear(cfg.latent_dim, flat)
        dec = []
        out_widths = list(reversed(widths[:-1])) + [head.num_params(spec.channels)]
        in_ch = widths[-1]
        for i, width in enumerate(out_widths):
            (h_in, w_in), (h_out, w_out) = sizes[num_layers - i], sizes[num_layers - i - 1]
            pad = (h_out - 2 * h_in, w_out - 2 * w_in)
            dec.append(nn.ConvTranspose2d(in_ch, width, 4, 2, 1, output_padding=pad))
            if i < num_layers - 1:
                dec.append(nn.ReLU())
            in_ch = width
        self.decoder = nn.Sequential(*dec)

    # -------------------------------------------------------------- pieces
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x): mean and log-variance ``[N, latent_dim]`` for images ``[N, C, H, W]``."""
        feats = rearrange(self.encoder(x), "n c h w -> n (c h w)")
        mu, logvar = self.to_posterior(feats).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """Head parameters ``[N, P, H, W]`` for latents ``[N, latent_dim]``."""
        c, h, w = self.bottom
        return self.decoder(rearrange(self.from_latent(z), "n (c h w) -> n c h w", c=c, h=h, w=w))

    @staticmethod
    def _frames(batch: dict[str, Tensor]) -> Tensor:
        frames = batch["frames"]
        if frames.dim() != 5 or frames.shape[1] != 1:
            raise ValueError(f"an image VAE takes frames [B, 1, C, H, W], got {tuple(frames.shape)}")
        return frames[:, 0]

    # ------------------------------------------------------- the interface
    def forward(self, batch: dict[str, Tensor]) -> ELBO:
        x = self._frames(batch)
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        nll = self.likelihood.nll(self.decode(z), x)
        kl = gaussian_kl(mu, logvar).sum(-1)
        return ELBO(nll=nll[:, None], kl=kl[:, None], dims=self.spec.frame_dims,
                    valid_bound=self.likelihood.valid_bound)

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Tensor]) -> Tensor:
        x = self._frames(batch)
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.likelihood.mean(self.decode(z))[:, None]

    @torch.no_grad()
    def generate(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        ref = batch["frames"]
        z = torch.randn(ref.shape[0], self.latent_dim, generator=generator, device=ref.device)
        return self.likelihood.mean(self.decode(z))[:, None]


@MODELS.register("conv_vae", ConvVAEConfig)
def build_conv_vae(cfg: ConvVAEConfig, head: LikelihoodHead, spec: DataSpec) -> ConvVAE:
    """The registered factory: :class:`ConvVAE` for single images of ``spec``."""
    return ConvVAE(cfg, head, spec)
