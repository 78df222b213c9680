"""SVG's DCGAN-style 64×64 frame encoder and decoder (Denton & Fergus 2018, §3 and App. A;
the DCGAN architecture of Radford et al. 2016, with skip connections).

Encoder: 4×4 stride-2 conv–BatchNorm–LeakyReLU(0.2) layers 64→128→256→512 channels
(64×64 → 4×4), then a 4×4 conv to ``g_dim`` with BatchNorm and tanh. Returns
``h[N, g_dim]`` and each layer's output (32×32, 16×16, 8×8, 4×4) as skip maps.

Decoder: a 4×4 transposed conv lifts ``g`` to 512×4×4; each following 4×4 stride-2
transposed conv–BN–LeakyReLU takes the concatenation with the encoder skip of its input
scale; the last one outputs the likelihood head's parameter channels with NO activation
(the head applies its own).

Layout and parameter counts are those of the original SVG ``dcgan_64`` model. The skip
concatenation is computed as a sum (see :func:`seqvae.nets.vgg64.conv_cat`), so a skip map
shared by many decoded frames is transformed once.
"""
from __future__ import annotations

from collections.abc import Sequence

from einops import rearrange
from torch import Tensor, nn

from seqvae.nets.vgg64 import conv_cat, project_code, skip_term, to_param_format


def dcgan_conv(c_in: int, c_out: int) -> nn.Sequential:
    """4×4 stride-2 conv – BatchNorm – LeakyReLU(0.2): halves the resolution."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True))


def dcgan_upconv(c_in: int, c_out: int) -> nn.Sequential:
    """4×4 stride-2 transposed conv – BatchNorm – LeakyReLU(0.2): doubles the resolution."""
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out),
                         nn.LeakyReLU(0.2, inplace=True))


class DCGANEncoder64(nn.Module):
    """``x[N, C, 64, 64] -> (h[N, g_dim], skips [N,64,32,32], [N,128,16,16], [N,256,8,8], [N,512,4,4])``."""

    def __init__(self, g_dim: int, channels: int, nf: int = 64) -> None:
        super().__init__()
        self.g_dim = g_dim
        self.c1 = dcgan_conv(channels, nf)          # -> 32×32
        self.c2 = dcgan_conv(nf, nf * 2)            # -> 16×16
        self.c3 = dcgan_conv(nf * 2, nf * 4)        # -> 8×8
        self.c4 = dcgan_conv(nf * 4, nf * 8)        # -> 4×4
        self.c5 = nn.Sequential(nn.Conv2d(nf * 8, g_dim, 4, 1, 0), nn.BatchNorm2d(g_dim), nn.Tanh())  # -> 1×1
        # per frame, all skip maps
        self.skip_features = nf * 32 * 32 + 2 * nf * 16 * 16 + 4 * nf * 8 * 8 + 8 * nf * 4 * 4

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = to_param_format(x, self.c1[0].weight)
        h1 = self.c1(x)      # [N, 64, 32, 32]
        h2 = self.c2(h1)     # [N, 128, 16, 16]
        h3 = self.c3(h2)     # [N, 256, 8, 8]
        h4 = self.c4(h3)     # [N, 512, 4, 4]
        h5 = self.c5(h4)     # [N, g, 1, 1]
        return rearrange(h5, "n g 1 1 -> n g"), [h1, h2, h3, h4]


class DCGANDecoder64(nn.Module):
    """``(g[B·S, g_dim], skip terms, skip_pos) -> params[B·S, out_channels, 64, 64]`` (no activation).

    Same calling convention as :class:`seqvae.nets.vgg64.VGGDecoder64`.
    """

    def __init__(self, g_dim: int, out_channels: int, nf: int = 64) -> None:
        super().__init__()
        self.g_dim = g_dim
        self.upc1 = nn.Sequential(nn.ConvTranspose2d(g_dim, nf * 8, 4, 1, 0), nn.BatchNorm2d(nf * 8),
                                  nn.LeakyReLU(0.2, inplace=True))
        self.upc2 = dcgan_upconv(nf * 8 * 2, nf * 4)    # 4 -> 8
        self.upc3 = dcgan_upconv(nf * 4 * 2, nf * 2)    # 8 -> 16
        self.upc4 = dcgan_upconv(nf * 2 * 2, nf)        # 16 -> 32
        self.upc5 = nn.Sequential(nn.ConvTranspose2d(nf * 2, out_channels, 4, 2, 1))  # 32 -> 64
        self._skip_blocks = (self.upc2, self.upc3, self.upc4, self.upc5)

    def skip_terms(self, skips: list[Tensor]) -> list[Tensor]:
        """Each skip block's transposed conv applied to its skip map (deepest first)."""
        return [skip_term(block[0], s) for block, s in zip(self._skip_blocks, reversed(skips))]

    def forward(self, g: Tensor, terms: list[Tensor], skip_pos: Sequence[int] | None = None) -> Tensor:
        x = to_param_format(project_code(self.upc1[0], g), self.upc1[0].weight)
        x = self.upc1[1:](x)                               # [N, 512, 4, 4]
        for block, term in zip(self._skip_blocks, terms):
            x = block[1:](conv_cat(block[0], x, term, skip_pos))
        return x                                           # [N, P, 64, 64]
