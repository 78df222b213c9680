"""Frame metrics (PSNR / SSIM / LPIPS / best-of-N / curves) and FID against known values.

No test touches the network: the pretrained-weights paths are checked with an empty torch
hub dir and a socket that refuses to connect; the LPIPS and Inception pipelines run on
randomly initialised weights saved in the real file formats.
"""
from __future__ import annotations

import csv
import math
import socket

import numpy as np
import pytest
import torch
from pytorch_msssim import ssim as msssim_ssim

from seqvae.evaluation.curves import best_of_n, save_curves
from seqvae.evaluation.fid import (
    INCEPTION_URL,
    compute_fid,
    feature_statistics,
    frechet_distance,
    frechet_distance_features,
    inception_features,
    load_inception,
)
from seqvae.evaluation.metrics import LPIPS, MissingWeightsError, psnr, ssim


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails loudly instead of hanging."""
    def refuse(*args, **kwargs):
        raise AssertionError("test tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch, no_network):
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


# --------------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_constant_offset_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    target = 0.85 * torch.rand(2, 3, 3, 16, 16, generator=g)
    d = torch.tensor([0.1, 0.05, 0.01])  # a different offset per time step
    pred = target + d.view(1, 3, 1, 1, 1)
    got = psnr(pred, target)  # MSE = d² per frame
    expected = (10 * torch.log10(1.0 / d**2)).expand(2, 3)  # 20, 26.02, 40 dB
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)


def test_identical_frames_give_inf_psnr_and_unit_ssim():
    x = torch.rand(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    p = psnr(x, x.clone())
    assert torch.isinf(p).all() and (p > 0).all() and not torch.isnan(p).any()
    assert (psnr(x, x.clone(), max_db=100.0) == 100.0).all()
    torch.testing.assert_close(ssim(x, x.clone()), torch.ones(2, 4), atol=1e-5, rtol=0)


def test_ssim_equals_pytorch_msssim_per_frame_and_drops_with_noise():
    g = torch.Generator().manual_seed(2)
    truth = torch.rand(2, 3, 3, 32, 32, generator=g)
    noise = torch.randn(truth.shape, generator=g)
    light = (truth + 0.05 * noise).clamp(0, 1)
    heavy = (truth + 0.3 * noise).clamp(0, 1)
    s_light = ssim(light, truth)
    for b, t in [(0, 0), (1, 2), (0, 1)]:
        ref = msssim_ssim(light[b, t][None], truth[b, t][None], data_range=1.0, size_average=False)
        torch.testing.assert_close(s_light[b, t], ref[0], atol=1e-6, rtol=0)
    assert (ssim(heavy, truth) < s_light).all()
    assert (s_light < 1.0).all()


@pytest.mark.parametrize("shape", [(300, 3, 64, 64), (5, 1, 20, 37), (4, 3, 11, 11)])
def test_ssim_equals_pytorch_msssim_on_many_frames_of_any_shape(shape):
    """Our banded-matrix blur against the library's convolutions: across FRAME_CHUNK, grey and
    colour, non-square frames and the smallest the window allows."""
    g = torch.Generator().manual_seed(3)
    truth = torch.rand(shape, generator=g)
    pred = (truth + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
    ref = msssim_ssim(pred, truth, data_range=1.0, size_average=False)
    torch.testing.assert_close(ssim(pred, truth), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(ssim(pred * 255, truth * 255, data_range=255.0), ref, atol=1e-6, rtol=0)


def test_ssim_rejects_frames_smaller_than_window():
    x = torch.rand(1, 2, 1, 8, 32)
    with pytest.raises(ValueError, match="11"):
        ssim(x, x)


# --------------------------------------------------------------------------------- best of N


def _mse(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return (pred - truth).pow(2).flatten(2).mean(2)  # [B, T]


def test_best_of_n_picks_best_mean_not_best_first_frame():
    g = torch.Generator().manual_seed(3)
    B, T = 3, 4
    truth = 0.5 * torch.ones(B, T, 1, 12, 12)
    # Per-sample, per-frame error levels; sequence b's best sample by the *mean* is best[b].
    levels = torch.full((4, B, T), 0.2)
    best = torch.tensor([2, 0, 3])
    for b, s in enumerate(best.tolist()):
        levels[s, b] = 0.02
    # A decoy that wins the first frame but loses on average (sequence 0).
    levels[1, 0] = torch.tensor([0.001, 0.3, 0.3, 0.3])
    signs = torch.randint(0, 2, (4, B, T, 1, 12, 12), generator=g) * 2 - 1
    samples = truth + levels[..., None, None, None] * signs  # |error| = level exactly

    curve, index = best_of_n(torch.stack([psnr(x, truth) for x in samples]), higher_is_better=True)
    assert index.tolist() == best.tolist()
    torch.testing.assert_close(curve, psnr(samples[best, torch.arange(B)], truth))
    torch.testing.assert_close(curve, torch.full((B, T), -20 * math.log10(0.02)), atol=1e-3, rtol=0)

    curve_mse, index_mse = best_of_n(torch.stack([_mse(x, truth) for x in samples]), higher_is_better=False)
    assert index_mse.tolist() == best.tolist()
    torch.testing.assert_close(curve_mse, torch.full((B, T), 0.02**2), rtol=1e-4, atol=0)
    # With the order reversed the worst sample is chosen: a check of the direction flag.
    _, worst = best_of_n(torch.stack([_mse(x, truth) for x in samples]), higher_is_better=True)
    assert worst[0].item() == 1


def test_save_curves_writes_mean_and_standard_error(tmp_path):
    psnr_curve = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])  # mean 2,3,4; sem = std/√2 = 1
    ssim_curve = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    paths = save_curves({"psnr": psnr_curve, "ssim": ssim_curve, "copy_last_psnr": psnr_curve - 1}, tmp_path / "out",
                        first_frame=3)
    with open(tmp_path / "out" / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["frame"]) for r in rows] == [3, 4, 5]    # 1-based frame numbers of the whole video
    assert [float(r["copy_last_psnr_mean"]) for r in rows] == pytest.approx([1.0, 2.0, 3.0])
    assert [float(r["psnr_mean"]) for r in rows] == pytest.approx([2.0, 3.0, 4.0])
    assert [float(r["psnr_sem"]) for r in rows] == pytest.approx([1.0, 1.0, 1.0])
    assert [float(r["ssim_sem"]) for r in rows] == pytest.approx([0.0, 0.0, 0.0])
    for name in ("psnr", "ssim"):
        png = tmp_path / "out" / f"{name}.png"
        assert png in paths and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "out" / "copy_last_psnr.png").exists()   # the baseline is drawn in psnr.png


# --------------------------------------------------------------------------------- LPIPS


ALEX_FILE = "alexnet-owt-7be5be79.pth"


# torchvision AlexNet `features` parameter shapes (conv layers at indices 0, 3, 6, 8, 10)
_ALEX_CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}


def _random_alexnet_features(path) -> dict[str, torch.Tensor]:
    """A torchvision-format AlexNet state_dict (``features.*`` entries only, random values)."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for i, (cout, cin, k) in _ALEX_CONVS.items():
        state[f"features.{i}.weight"] = torch.randn(cout, cin, k, k, generator=g) / math.sqrt(cin * k * k)
        state[f"features.{i}.bias"] = 0.01 * torch.randn(cout, generator=g)
    torch.save(state, path)
    return state


def test_lpips_missing_backbone_raises_with_path_and_setting(empty_hub, tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        LPIPS()
    msg = str(info.value)
    assert str(empty_hub / "checkpoints" / ALEX_FILE) in msg
    assert "backbone_weights" in msg
    with pytest.raises(MissingWeightsError, match="nope.pth"):
        LPIPS(backbone_weights=tmp_path / "nope.pth")


def test_lpips_loads_local_backbone_and_scores_frames_in_minus_one_one(empty_hub):
    (empty_hub / "checkpoints").mkdir()
    state = _random_alexnet_features(empty_hub / "checkpoints" / ALEX_FILE)
    metric = LPIPS()  # found in the (patched) torch hub cache
    trunk = metric.model.net.state_dict()
    torch.testing.assert_close(trunk["slice1.0.weight"], state["features.0.weight"])
    torch.testing.assert_close(trunk["slice5.10.bias"], state["features.10.bias"])

    g = torch.Generator().manual_seed(4)
    truth = torch.rand(2, 3, 3, 32, 32, generator=g)
    pred = (truth + 0.2 * torch.randn(truth.shape, generator=g)).clamp(0, 1)
    got = metric(pred, truth)
    assert got.shape == (2, 3)
    with torch.no_grad():
        ref = metric.model(pred[1, 2][None] * 2 - 1, truth[1, 2][None] * 2 - 1).flatten()
        ref01 = metric.model(pred[0, 1][None], truth[0, 1][None], normalize=True).flatten()
    torch.testing.assert_close(got[1, 2], ref[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got[0, 1], ref01[0], rtol=1e-5, atol=1e-7)
    assert (got > 0).all()
    metric.train()  # a metric stays deterministic: the dropout in lpips's linear layers stays off
    torch.testing.assert_close(metric(pred, truth), got)
    torch.testing.assert_close(metric(truth, truth), torch.zeros(2, 3), atol=1e-7, rtol=0)
    # Grayscale is scored as its RGB repetition.
    gray_p, gray_t = pred[:, :, :1], truth[:, :, :1]
    torch.testing.assert_close(metric(gray_p, gray_t), metric(gray_p.expand_as(pred), gray_t.expand_as(truth)))


# --------------------------------------------------------------------------------- Fréchet distance


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_diagonal_closed_form(method):
    rng = np.random.default_rng(5)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2), method=method)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_commuting_nondiagonal_closed_form(method):
    rng = np.random.default_rng(6)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))  # shared eigenvectors -> Σ1 Σ2 = Σ2 Σ1
    a, b = rng.uniform(0.2, 2.0, size=5), rng.uniform(0.2, 2.0, size=5)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = np.zeros(5), np.full(5, 0.5)
    expected = 5 * 0.25 + np.sum(a + b - 2 * np.sqrt(a * b))
    got = frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), mu2, s2, method=method)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_torch_fidelity_reference():
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 12))
    y = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) * 0.5 + 1.0  # non-commuting covariances
    (m1, s1), (m2, s2) = feature_statistics(x), feature_statistics(y)
    ref = fid_statistics_to_metric({"mu": m1, "sigma": s1}, {"mu": m2, "sigma": s2}, verbose=False)
    ref = ref["frechet_inception_distance"]
    assert ref > 1.0
    for method in ("eigh", "sqrtm"):
        assert frechet_distance(m1, s1, m2, s2, method=method) == pytest.approx(ref, rel=1e-7)


def test_fid_of_feature_set_with_itself_is_zero_even_when_rank_deficient():
    rng = np.random.default_rng(8)
    feats = rng.normal(size=(40, 64)) * rng.uniform(0.5, 2.0, size=64)  # N < D: singular covariance
    mu, sigma = feature_statistics(feats)
    assert np.linalg.matrix_rank(sigma) < 64
    # √ of round-off eigenvalues on the null space limits this to ~√ε relative accuracy
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6 * np.trace(sigma)
    assert abs(frechet_distance_features(feats, feats)) < 1e-10 * np.trace(sigma)
    full = rng.normal(size=(400, 16))
    mu, sigma = feature_statistics(full)
    assert abs(frechet_distance(mu, sigma, mu, sigma, method="sqrtm")) < 1e-8 * np.trace(sigma)
    # and a shifted copy is exactly ‖shift‖² away
    assert frechet_distance(mu, sigma, mu + 0.1, sigma) == pytest.approx(16 * 0.01, rel=1e-6)


def test_low_rank_feature_route_equals_covariance_route():
    rng = np.random.default_rng(10)
    a = rng.normal(size=(7, 50)) * rng.uniform(0.2, 2.0, size=50)
    b = rng.normal(size=(5, 50)) + 0.3
    expected = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert expected > 1.0
    assert frechet_distance_features(a, b) == pytest.approx(expected, rel=1e-6)
    big = rng.normal(size=(80, 50))  # more points than dimensions: the covariance route
    assert frechet_distance_features(big, b) == pytest.approx(
        frechet_distance(*feature_statistics(big), *feature_statistics(b)), rel=1e-12)


# --------------------------------------------------------------------------------- FID pipeline


def test_fid_missing_inception_weights_raises_before_any_download(empty_hub, tmp_path):
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(MissingWeightsError) as info:
        compute_fid(images, images)
    msg = str(info.value)
    assert INCEPTION_URL in msg
    assert str(empty_hub / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[1]) in msg
    assert "weights_path" in msg
    with pytest.raises(MissingWeightsError, match="missing.pth"):
        compute_fid(images, images, weights_path=tmp_path / "missing.pth")


@pytest.fixture(scope="module")
def random_inception_file(tmp_path_factory):
    """torch-fidelity's Inception with random weights, BatchNorm calibrated on two images so
    activations stay O(1), saved in the format ``feature_extractor_weights_path`` expects."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # first batch -> running stats = batch stats
    model.train()
    with torch.no_grad():
        model(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    torch.save(model.state_dict(), path)
    torch.set_num_threads(threads)
    return path


def test_compute_fid_end_to_end_gray_iterable_vs_rgb(random_inception_file, no_network):
    g = torch.Generator().manual_seed(9)
    gray = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8, generator=g)
    other = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=g)
    extractor = load_inception(random_inception_file)
    with pytest.raises(TypeError, match="uint8"):
        inception_features(gray.float() / 255, extractor)
    f_rgb = inception_features(gray.expand(-1, 3, -1, -1)[None], extractor)  # [1, N, 3, H, W] tensor
    f_other = inception_features(other, extractor)
    assert f_rgb.shape == (2, 2048) and (f_rgb[0] - f_rgb[1]).abs().mean() > 1e-2  # not degenerate
    expected = frechet_distance_features(f_rgb, f_other)
    assert expected > 1e-2
    # grayscale as an iterable of batches must score as its RGB repetition
    fid = compute_fid([gray[:1], gray[1:]], other, weights_path=random_inception_file, batch_size=1)
    assert fid == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_compute_fid_covariance_route_matches_torch_fidelity(random_inception_file):
    """Full 2048×2048 route (~1.5 min on a shared CPU) against torch-fidelity's own formula."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    g = torch.Generator().manual_seed(11)
    a = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=g)
    b = torch.randint(0, 128, (4, 3, 64, 64), dtype=torch.uint8, generator=g)
    extractor = load_inception(random_inception_file)
    (m1, s1), (m2, s2) = (feature_statistics(inception_features(x, extractor)) for x in (a, b))
    ref = fid_statistics_to_metric({"mu": m1, "sigma": s1}, {"mu": m2, "sigma": s2}, verbose=False)
    ref = ref["frechet_inception_distance"]
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-4)
    assert compute_fid(a, b, weights_path=random_inception_file) == pytest.approx(ref, rel=1e-4)  # low-rank route
    with pytest.raises(ValueError, match="imaginary"):  # pytorch-fid's sqrtm breaks on singular covariances
        frechet_distance(m1, s1, m2, s2, method="sqrtm")
