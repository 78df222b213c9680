"""Inference-time rewriting of trained networks: BatchNorm in evaluation mode is an affine
map per channel, so it folds into the convolution before it (``W' = W·γ/√(v + ε)``,
``b' = (b − μ)·γ/√(v + ε) + β``; :func:`torch.nn.utils.fusion.fuse_conv_bn_weights`), which
saves a pass over every activation map. The same function up to rounding, in eval mode only."""
from __future__ import annotations

from torch import nn

CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every ``BatchNorm2d`` that directly follows a convolution inside an
    ``nn.Sequential`` of ``module`` into that convolution (its weight and bias are replaced)
    and put an ``nn.Identity`` in its place; in place, for evaluation only (the running
    statistics are used). Returns how many were folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    folded = 0
    for block in module.modules():
        if not isinstance(block, nn.Sequential):
            continue
        for i in range(len(block) - 1):
            conv, norm = block[i], block[i + 1]
            if not (isinstance(conv, CONVS) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats
                    and norm.running_mean is not None):
                continue
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var,
                                                norm.eps, norm.weight, norm.bias,
                                                transpose=isinstance(conv, nn.ConvTranspose2d))
            conv.weight, conv.bias = weight, bias
            block[i + 1] = nn.Identity()
            folded += 1
    return folded
