"""Image data sets as length-one sequences: a procedural set the repo makes itself,
SVHN / CIFAR-10 / CelebA / MNIST through torchvision with their standard splits, and a
folder of the user's own pictures.

Every item is ``{"frames": uint8 [1, C, H, W]}``. Splits: "train", "val", "test". Where a
data set has no official validation split (SVHN, CIFAR-10, MNIST) "val" is the last
``val_size`` examples of the official train split and "train" is the rest; CelebA uses
its official train/valid/test partition.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset

from seqvae.data.spec import DataSpec
from seqvae.registry import DATASETS, ComponentConfig, require_at_least

SPLITS = ("train", "val", "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def resize_uint8(image: Tensor, size: int) -> Tensor:
    """Center-crop ``[C, H, W]`` uint8 to a square and resize (antialiased) to ``size``."""
    c, h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[:, top:top + side, left:left + side]
    if side == size:
        return image
    out = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[0].round().clamp(0, 255).to(torch.uint8)


# ------------------------------------------------------------ procedural shapes
class ShapesImages(Dataset):
    """Procedural images: 1–3 coloured rectangles and ellipses on a two-tone background.

    Item ``i`` of a split is a pure function of ``(seed, split, i)``; the splits draw
    from disjoint seed streams. Small, learnable and varied enough that a calibrated
    decoder visibly beats a unit-variance one — the image path's no-download default.
    """

    def __init__(self, size: int, split: str, image_size: int = 32, channels: int = 3, seed: int = 0) -> None:
        _check_split(split)
        self.size, self.split, self.seed = size, split, seed
        self.spec = DataSpec(channels, image_size, image_size)
        ys, xs = torch.meshgrid(torch.arange(image_size) + 0.5, torch.arange(image_size) + 0.5, indexing="ij")
        self._grid = (ys / image_size, xs / image_size)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + SPLITS.index(self.split)) * 10_000_019 + index)
        c = self.spec.channels
        ys, xs = self._grid
        u = lambda *shape: torch.rand(shape, generator=g)  # noqa: E731
        image = u(c, 1, 1) * 0.5 + (u(c, 1, 1) * 0.3) * (ys[None] > u(1).item())  # two-tone background
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cy, cx, ry, rx = u(1).item(), u(1).item(), 0.1 + 0.25 * u(1).item(), 0.1 + 0.25 * u(1).item()
            if u(1).item() < 0.5:
                mask = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0
            else:
                mask = ((ys - cy).abs() <= ry) & ((xs - cx).abs() <= rx)
            image = torch.where(mask[None], u(c, 1, 1), image)
        return {"frames": (image * 255).round().to(torch.uint8)[None]}


@dataclass
class ShapesConfig(ComponentConfig):
    name: str = "shapes"
    image_size: int = 32
    channels: int = 3
    train_size: int = 20000
    val_size: int = 500
    test_size: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least(self, "data", 1, "image_size")
        require_at_least(self, "data", 0, "train_size", "val_size", "test_size")
        if self.channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {self.channels}")


@DATASETS.register("shapes", ShapesConfig)
def build_shapes(cfg: ShapesConfig, split: str) -> ShapesImages:
    size = {"train": cfg.train_size, "val": cfg.val_size, "test": cfg.test_size}[split]
    return ShapesImages(size, split, cfg.image_size, cfg.channels, cfg.seed)


# ------------------------------------------------------------ torchvision sets
class TorchvisionImages(Dataset):
    """Wraps a torchvision data set: PIL → uint8 ``[1, C, S, S]`` (center crop + resize)."""

    def __init__(self, base: Dataset, image_size: int, channels: int) -> None:
        self.base, self.image_size, self.channels = base, image_size, channels
        self.spec = DataSpec(channels, image_size, image_size)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image = self.base[index][0]
        if isinstance(image, Image.Image):
            image = image.convert("L" if self.channels == 1 else "RGB")
            image = torch.from_numpy(np.asarray(image).copy())
            image = image[None] if image.dim() == 2 else image.permute(2, 0, 1)
        return {"frames": resize_uint8(image, self.image_size)[None]}


@dataclass
class TorchvisionConfig(ComponentConfig):
    """SVHN / CIFAR-10 / CelebA / MNIST through torchvision (standard splits)."""

    name: str = "svhn"
    root: str = ""            # default: datasets/<name>
    download: bool = False    # fetch the data set into root when it is missing
    image_size: int = 0       # default: the paper's (SVHN/MNIST 28, CIFAR-10/CelebA 32)
    val_size: int = 5000      # SVHN/CIFAR-10/MNIST: last examples of train held out as "val"

    def __post_init__(self) -> None:
        require_at_least(self, "data", 0, "image_size", "val_size")


_DEFAULT_SIZE = {"svhn": 28, "mnist": 28, "cifar10": 32, "celeba": 32}
_CHANNELS = {"svhn": 3, "mnist": 1, "cifar10": 3, "celeba": 3}


def _torchvision_base(name: str, root: Path, split: str, download: bool) -> Dataset:
    import torchvision.datasets as tvd

    train = split in ("train", "val")
    if name == "svhn":
        return tvd.SVHN(str(root), split="train" if train else "test", download=download)
    if name == "cifar10":
        return tvd.CIFAR10(str(root), train=train, download=download)
    if name == "mnist":
        return tvd.MNIST(str(root), train=train, download=download)
    if name == "celeba":
        return tvd.CelebA(str(root), split={"train": "train", "val": "valid", "test": "test"}[split], download=download)
    raise ValueError(name)


def build_torchvision(cfg: TorchvisionConfig, split: str) -> TorchvisionImages:
    _check_split(split)
    root = Path(cfg.root or f"datasets/{cfg.name}")
    try:
        base = _torchvision_base(cfg.name, root, split, cfg.download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted..."
        raise FileNotFoundError(
            f"{cfg.name} data not found under {root.resolve()} ({err}). Download it with the override "
            f"data.download=true (or place the files there; see datasets/{cfg.name}/README.md)."
        ) from None
    if cfg.name != "celeba" and split != "test":
        n = len(base)
        if not 0 < cfg.val_size < n:
            raise ValueError(f"data.val_size must be between 1 and {n - 1}, got {cfg.val_size}")
        keep = range(n - cfg.val_size, n) if split == "val" else range(n - cfg.val_size)
        base = Subset(base, list(keep))
    return TorchvisionImages(base, cfg.image_size or _DEFAULT_SIZE[cfg.name], _CHANNELS[cfg.name])


for _name in ("svhn", "cifar10", "celeba", "mnist"):
    DATASETS.register(_name, TorchvisionConfig)(build_torchvision)


# ------------------------------------------------------------ the user's folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageFolder(Dataset):
    """A folder (searched recursively) of the user's pictures.

    The split of a file is a pure function of its relative path (a hash), so adding
    pictures never moves old ones between splits: ``val_percent`` % go to "val",
    ``test_percent`` % to "test". With ``resize=True`` pictures are center-cropped and
    resized to ``image_size``; otherwise one of another size is an error naming it.
    Colour pictures are converted to ``channels`` (1: grayscale, 3: RGB).
    """

    def __init__(self, root: str | Path, split: str, image_size: int, channels: int, resize: bool,
                 val_percent: float, test_percent: float) -> None:
        _check_split(split)
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {channels}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root.resolve()} does not exist; "
                                    "set data.root to a folder of pictures")
        self._val, self._test = val_percent, test_percent
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no pictures ({', '.join(IMAGE_SUFFIXES)}) found under {self.root.resolve()}")
        self.files = [p for p in files if self._split_of(p) == split]
        self.image_size, self.channels, self.resize = image_size, channels, resize
        self.spec = DataSpec(channels, image_size, image_size)

    def _split_of(self, path: Path) -> str:
        digest = hashlib.sha1(str(path.relative_to(self.root)).encode()).digest()
        bucket = int.from_bytes(digest[:4], "big") / 2**32 * 100
        return "test" if bucket < self._test else "val" if bucket < self._test + self._val else "train"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        path = self.files[index]
        try:
            with Image.open(path) as pic:
                pic = pic.convert("L" if self.channels == 1 else "RGB")
                array = np.asarray(pic).copy()
        except OSError as err:
            raise OSError(f"cannot read picture {path}: {err}") from None
        image = torch.from_numpy(array)
        image = image[None] if image.dim() == 2 else image.permute(2, 0, 1)
        if image.shape[1:] != (self.image_size, self.image_size):
            if not self.resize:
                raise ValueError(
                    f"{path} is {image.shape[2]}×{image.shape[1]} but data.image_size is {self.image_size}; "
                    "set data.resize=true to center-crop and resize, or data.image_size to match"
                )
            image = resize_uint8(image, self.image_size)
        return {"frames": image[None]}


@dataclass
class ImageFolderConfig(ComponentConfig):
    name: str = "image_folder"
    root: str = ""
    image_size: int = 32
    channels: int = 3
    resize: bool = True
    val_percent: float = 5.0
    test_percent: float = 5.0

    def __post_init__(self) -> None:
        require_at_least(self, "data", 1, "image_size")
        if self.channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {self.channels}")


@DATASETS.register("image_folder", ImageFolderConfig)
def build_image_folder(cfg: ImageFolderConfig, split: str) -> ImageFolder:
    if not cfg.root:
        raise ValueError("data.root must name a folder of pictures for the image_folder data set")
    return ImageFolder(cfg.root, split, cfg.image_size, cfg.channels, cfg.resize, cfg.val_percent, cfg.test_percent)
