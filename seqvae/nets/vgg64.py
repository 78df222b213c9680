"""SVG's VGG-style 64×64 frame encoder and decoder (Denton & Fergus 2018, §3 and App. A:
"VGG16-like" encoder/decoder with skip connections, used for BAIR).

Encoder: four blocks of 3×3 conv–BatchNorm–LeakyReLU(0.2) layers with 64, 128, 256, 512
channels (2, 2, 3, 3 layers) separated by 2×2 max-pools, then a 4×4 conv to ``g_dim``
with BatchNorm and tanh. It returns the frame code ``h[N, g_dim]`` and the output of every
block (64×64, 32×32, 16×16, 8×8) as skip feature maps.

Decoder: the mirror image. A 4×4 transposed conv lifts ``g`` to 512×4×4; each following
block upsamples ×2 (nearest), concatenates the encoder skip of that scale and applies
3×3 conv–BN–LeakyReLU layers; the last layer is a 3×3 (transposed) conv to the
likelihood head's parameter channels, with NO output activation (the head applies its
own; the original SVG ends in a sigmoid because its head is a fixed Gaussian/MSE).

Parameter layout and counts are those of the original SVG ``vgg_64`` model (BAIR,
g_dim 128, 3 channels: encoder 8.69 M, decoder 11.82 M with 3 output channels) at the
default width ``nf = 64``; a smaller ``nf`` scales every block's channels (nf, 2nf, 4nf,
8nf) for quick CPU checks.

The skip concatenation is evaluated as a sum (see :func:`conv_cat`), so a skip map
shared by many decoded frames (SVG's "last context frame" rule) is convolved once, not
once per frame — same weights, same function, less work.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


# ---------------------------------------------------------------- shared helpers
def to_param_format(x: Tensor, weight: Tensor) -> Tensor:
    """Give ``x`` the memory format of ``weight`` (channels_last when the model is)."""
    if weight.dim() == 4 and not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def project_code(conv: nn.ConvTranspose2d, g: Tensor) -> Tensor:
    """``conv`` (a transposed conv with stride 1 and no padding, e.g. 4×4) on codes ``g[N, C]``
    seen as 1×1 maps, computed as the matrix product it is: ``[N, C_out, k, k]``. The same
    function as ``conv(g[..., None, None])``; on a CPU it is an order of magnitude faster
    (oneDNN's transposed convolution on 1×1 inputs: 9.3 vs 0.7 ms for 100 codes, bf16)."""
    k_h, k_w = conv.weight.shape[-2:]
    bias = None if conv.bias is None else conv.bias.repeat_interleave(k_h * k_w)
    out = F.linear(g, conv.weight.flatten(1).t(), bias)
    return rearrange(out, "n (c kh kw) -> n c kh kw", kh=k_h, kw=k_w)


# output phase of a stride-2, 4×4, padding-1 transposed conv -> the kernel taps it uses,
# in the order a stride-1 2×2 correlation over the input padded by 1 visits them
_PHASE_TAPS = ((3, 1), (2, 0))


def upsample_few_channels(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv_transpose2d(x, weight, bias, stride=2, padding=1)`` for a 4×4 kernel, as one
    stride-1 2×2 convolution that computes the four output phases at once, interleaved.

    The same function (each output sums the same four taps); used where the transposed conv
    has few output channels, where oneDNN is slow: the 64×64 RGB output of dcgan64,
    32→3 channels for 100 frames, 11.7 vs 6.4 ms (bf16) and 20.7 vs 11.8 ms (fp32) on a CPU.
    """
    n, _, h, w = x.shape
    taps = [weight[:, :, list(_PHASE_TAPS[a])][:, :, :, list(_PHASE_TAPS[b])] for a in (0, 1) for b in (0, 1)]
    kernel = rearrange(torch.stack(taps), "phase cin cout kh kw -> (phase cout) cin kh kw")
    y = F.conv2d(F.pad(x, (1, 1, 1, 1)), kernel)                                     # [N, 4·C_out, H+1, W+1]
    y = rearrange(y, "n (a b c) hh ww -> n a b c hh ww", a=2, b=2)
    rows = [torch.stack([y[:, a, b, :, a:a + h, b:b + w] for b in (0, 1)], -1) for a in (0, 1)]
    out = rearrange(torch.stack(rows, -3), "n c h a w b -> n c (h a) (w b)")
    return out if bias is None else out + bias[None, :, None, None].to(out.dtype)


FEW_CHANNELS = 4   # transposed convs with at most this many output channels take upsample_few_channels


def transposed(conv: nn.ConvTranspose2d, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv``'s transposed convolution of ``x`` with ``weight`` (a slice of ``conv.weight``)."""
    if (weight.shape[1] <= FEW_CHANNELS and tuple(conv.kernel_size) == (4, 4) and tuple(conv.stride) == (2, 2)
            and tuple(conv.padding) == (1, 1) and tuple(conv.output_padding) == (0, 0)):
        return upsample_few_channels(x, weight, bias)
    return F.conv_transpose2d(x, weight, bias, conv.stride, conv.padding, conv.output_padding)


def skip_term(conv: nn.Conv2d | nn.ConvTranspose2d, skip: Tensor) -> Tensor:
    """The skip half of ``conv(cat([x, skip], 1))``: ``conv_skip(skip)`` without bias.

    ``skip[M, Cs, h, w]`` uses the last ``Cs`` input channels of ``conv``'s weight.
    """
    cs = skip.shape[1]
    if isinstance(conv, nn.ConvTranspose2d):  # weight [in, out, k, k]
        return transposed(conv, skip, conv.weight[-cs:], None)
    w = conv.weight[:, -cs:]  # weight [out, in, k, k]
    return F.conv2d(skip, w, None, conv.stride, conv.padding)


def conv_cat(conv: nn.Conv2d | nn.ConvTranspose2d, x: Tensor, term: Tensor, skip_pos: Sequence[int] | None) -> Tensor:
    """``conv(cat([x, skip_rows], 1))`` given ``term = skip_term(conv, skip)``.

    Convolution is linear in its input channels, so the concatenation splits into
    ``conv_x(x) + bias + conv_skip(skip)``, and the skip part is computed once per distinct
    skip map. Rows are ``(b s)``: ``x[B·S, ...]``, ``term[B·K, ...]``; step ``s`` of
    sequence ``b`` uses skip row ``b·K + skip_pos[s]`` (``skip_pos=None``: ``K = S``, row to row).
    """
    cx = x.shape[1]
    if isinstance(conv, nn.ConvTranspose2d):
        y = transposed(conv, x, conv.weight[:cx], conv.bias)
    else:
        y = F.conv2d(x, conv.weight[:, :cx], conv.bias, conv.stride, conv.padding)
    if skip_pos is None:
        return y + term
    s = len(skip_pos)
    ys = rearrange(y, "(b s) c h w -> b s c h w", s=s)
    ts = rearrange(term, "(b k) c h w -> b k c h w", b=ys.shape[0])
    start = 0
    for stop in range(1, s + 1):  # add each run of steps sharing a skip map by broadcasting
        if stop == s or skip_pos[stop] != skip_pos[start]:
            p = skip_pos[start]
            ys[:, start:stop] += ts[:, p : p + 1]
            start = stop
    return y


def vgg_layer(c_in: int, c_out: int) -> nn.Sequential:
    """3×3 conv – BatchNorm – LeakyReLU(0.2), as SVG's ``vgg_layer``."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True))


# ------------------------------------------------------------------------ nets
class VGGEncoder64(nn.Module):
    """``x[N, C, 64, 64] -> (h[N, g_dim], skips [N,64,64,64], [N,128,32,32], [N,256,16,16], [N,512,8,8])``
    (channel counts at the default ``nf = 64``)."""

    def __init__(self, g_dim: int, channels: int, nf: int = 64) -> None:
        super().__init__()
        self.g_dim = g_dim
        self.c1 = nn.Sequential(vgg_layer(channels, nf), vgg_layer(nf, nf))                           # 64×64
        self.c2 = nn.Sequential(vgg_layer(nf, 2 * nf), vgg_layer(2 * nf, 2 * nf))                     # 32×32
        self.c3 = nn.Sequential(vgg_layer(2 * nf, 4 * nf), vgg_layer(4 * nf, 4 * nf),                 # 16×16
                                vgg_layer(4 * nf, 4 * nf))
        self.c4 = nn.Sequential(vgg_layer(4 * nf, 8 * nf), vgg_layer(8 * nf, 8 * nf),                 # 8×8
                                vgg_layer(8 * nf, 8 * nf))
        self.c5 = nn.Sequential(nn.Conv2d(8 * nf, g_dim, 4, 1, 0), nn.BatchNorm2d(g_dim), nn.Tanh())  # 4×4 -> 1×1
        # per frame, all skip maps
        self.skip_features = nf * 64 * 64 + 2 * nf * 32 * 32 + 4 * nf * 16 * 16 + 8 * nf * 8 * 8

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = to_param_format(x, self.c1[0][0].weight)
        h1 = self.c1(x)                       # [N, 64, 64, 64]
        h2 = self.c2(F.max_pool2d(h1, 2))     # [N, 128, 32, 32]
        h3 = self.c3(F.max_pool2d(h2, 2))     # [N, 256, 16, 16]
        h4 = self.c4(F.max_pool2d(h3, 2))     # [N, 512, 8, 8]
        h5 = self.c5(F.max_pool2d(h4, 2))     # [N, g, 1, 1]
        return rearrange(h5, "n g 1 1 -> n g"), [h1, h2, h3, h4]


class VGGDecoder64(nn.Module):
    """``(g[B·S, g_dim], skip terms, skip_pos) -> params[B·S, out_channels, 64, 64]`` (no activation).

    Call :meth:`skip_terms` once on the skip maps ``[B·K, ...]`` (from :class:`VGGEncoder64`),
    then :meth:`forward` with ``skip_pos[S]`` naming the skip map (0..K−1) of each step
    (None when ``K = S``, one map per output). ``decoder(g, decoder.skip_terms(skips))`` is
    SVG's decoder exactly.
    """

    def __init__(self, g_dim: int, out_channels: int, nf: int = 64) -> None:
        super().__init__()
        self.g_dim = g_dim
        self.upc1 = nn.Sequential(nn.ConvTranspose2d(g_dim, 8 * nf, 4, 1, 0), nn.BatchNorm2d(8 * nf),
                                  nn.LeakyReLU(0.2, inplace=True))
        self.upc2 = nn.Sequential(vgg_layer(8 * nf * 2, 8 * nf), vgg_layer(8 * nf, 8 * nf),              # 8×8
                                  vgg_layer(8 * nf, 4 * nf))
        self.upc3 = nn.Sequential(vgg_layer(4 * nf * 2, 4 * nf), vgg_layer(4 * nf, 4 * nf),              # 16×16
                                  vgg_layer(4 * nf, 2 * nf))
        self.upc4 = nn.Sequential(vgg_layer(2 * nf * 2, 2 * nf), vgg_layer(2 * nf, nf))                  # 32×32
        self.upc5 = nn.Sequential(vgg_layer(nf * 2, nf), nn.ConvTranspose2d(nf, out_channels, 3, 1, 1))  # 64×64
        # the blocks that take a skip, deepest first (skips come shallowest first)
        self._skip_blocks = (self.upc2, self.upc3, self.upc4, self.upc5)

    def skip_terms(self, skips: list[Tensor]) -> list[Tensor]:
        """Each skip block's first conv applied to its skip map (deepest first): ``[M, c, s, s]``."""
        return [skip_term(block[0][0], s) for block, s in zip(self._skip_blocks, reversed(skips))]

    def forward(self, g: Tensor, terms: list[Tensor], skip_pos: Sequence[int] | None = None) -> Tensor:
        x = to_param_format(project_code(self.upc1[0], g), self.upc1[0].weight)
        x = self.upc1[1:](x)                                          # [N, 512, 4, 4]
        for block, term in zip(self._skip_blocks, terms):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")    # ×2
            first = block[0]
            x = first[2](first[1](conv_cat(first[0], x, term, skip_pos)))
            x = block[1:](x)
        return x                                                      # [N, P, 64, 64]
