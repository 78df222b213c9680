"""The one training loop: exact resume, DDP equivalence, and clear errors on bad input."""
import json
import math

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from PIL import Image
from tiny_runs import TINY_IMAGE_RUN

from seqvae import dist as seqvae_dist
from seqvae.build import build_model
from seqvae.checkpoint import CheckpointError, load_checkpoint
from seqvae.cli import main as cli_main
from seqvae.config import ConfigError, RunConfig, apply_overrides
from seqvae.data.spec import DataSpec
from seqvae.loading import load_model
from seqvae.training import RunFolderError, train
from seqvae.training.update_guard import UpdatesSkippedError

BASE = TINY_IMAGE_RUN  # tests/tiny_runs.py


def _cfg(tmp_path, name, *overrides):
    return RunConfig.from_dict(apply_overrides(BASE, [f"train.out_dir={tmp_path / name}", *overrides]))


def test_resume_equals_uninterrupted(tmp_path):
    # N = 6 steps, stop, resume to 2N (crossing an epoch boundary: 5 batches per epoch)
    train(_cfg(tmp_path, "a"), progress=False)
    first = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    assert first["step"] == 6
    train(_cfg(tmp_path, "a", "train.steps=12"), resume=True, progress=False)
    train(_cfg(tmp_path, "b", "train.steps=12"), progress=False)
    resumed = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    straight = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert resumed["step"] == straight["step"] == 12
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    assert not torch.equal(first["model"]["decoder.0.weight"], straight["model"]["decoder.0.weight"])
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["split"] == "train"] == [2, 4, 6, 8, 10, 12]


def test_existing_run_is_never_overwritten(tmp_path):
    train(_cfg(tmp_path, "run"), progress=False)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    before = ckpt.read_bytes()
    with pytest.raises(RunFolderError, match="--resume"):
        train(_cfg(tmp_path, "run"), progress=False)
    assert ckpt.read_bytes() == before


def _ddp_worker(rank, world, init_file, out_file, batch):
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = _tiny_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    half = batch.shape[0] // world
    torch.manual_seed(1)
    if rank == 1:
        torch.randn(half, 4)  # skip rank 0's share of the posterior noise stream
    out = ddp({"frames": batch[rank * half:(rank + 1) * half]})
    out.loss.backward()
    model.commit_step()  # the optimal-σ EMA takes the step's σ* (seqvae.models.base)
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    torch.save({"grads": grads, "ema_sigma2": model.state_dict()["likelihood.ema_sigma2"]}, f"{out_file}.{rank}")
    seqvae_dist.cleanup()   # a barrier, then the teardown (a bare destroy aborted one rank once in CI)


def _tiny_model():
    cfg = RunConfig.from_dict(BASE)
    torch.manual_seed(0)
    return build_model(cfg, DataSpec(3, 16, 16))


def test_two_process_ddp_equals_one_process_on_joined_batch(tmp_path):
    """What DDP promises: after backward, every rank holds the gradient of the joined batch.

    The two computations sum the same terms in different orders (each rank its half, then
    the all-reduce), so they agree up to float32 rounding: a sum of m terms in any order
    is within (m − 1)·u·Σ|terms| of the exact sum (u = 2⁻²⁴), whatever the CPU's kernels
    (AMX, AVX-512, AVX2 sum in different orders). Compared per tensor in relative L2 norm
    with m·u for the longest sum the gradients depend on (the optimal-σ estimate σ*², a mean
    over all B·C·H·W pixels of the batch), since a single element near zero has no relative
    precision to check (an Adam step, lr·g/(|g|+ε), would blow exactly that up).
    """
    from seqvae.data.images import ShapesImages

    data = ShapesImages(8, "train", 16)
    batch = torch.stack([data[i]["frames"] for i in range(8)]).float() / 255
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp.pt"), batch), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"ddp.pt.{r}", weights_only=True) for r in range(2)]
    for key, value in ranks[0]["grads"].items():  # the all-reduce hands every rank the same sum
        assert torch.equal(ranks[1]["grads"][key], value), key

    model = _tiny_model()
    torch.manual_seed(1)
    model({"frames": batch}).loss.backward()
    model.commit_step()
    tolerance = batch.numel() * 2.0 ** -24          # m·u, m = 8·3·16·16: 3.7e-4
    for name, param in model.named_parameters():
        ddp_grad = ranks[0]["grads"][name]
        error = float((ddp_grad - param.grad).norm() / param.grad.norm().clamp(min=1e-30))
        assert error <= tolerance, f"{name}: relative L2 error {error:.2e} > {tolerance:.2e}"
    # and gradients that differ as a whole are caught: rank 0's gradient alone (its half) is not the joined one
    half = _tiny_model()
    torch.manual_seed(1)
    half({"frames": batch[:4]}).loss.backward()
    worst = max(float((p.grad - q.grad).norm() / q.grad.norm()) for p, q in zip(half.parameters(), model.parameters()))
    assert worst > 100 * tolerance
    # the optimal-σ estimate was all-reduced: both saw the σ* of the joined batch
    torch.testing.assert_close(ranks[0]["ema_sigma2"], model.state_dict()["likelihood.ema_sigma2"],
                               rtol=tolerance, atol=0)


def _write_yaml(tmp_path, raw):
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cli_unknown_key_is_a_clear_error(tmp_path, capsys):
    path = _write_yaml(tmp_path, BASE)
    assert cli_main(["train", str(path), "train.stesp=3", f"train.out_dir={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train.stesp'" in err and "Did you mean 'train.steps'" in err
    assert not (tmp_path / "x").exists()
    # overrides after a flag are still overrides (checked the same way); a stray flag is an error
    assert cli_main(["train", str(path), "--dry-run", "train.stesp=3"]) == 2
    assert "Did you mean 'train.steps'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["train", str(path), "--dry-run", "--resmue"])
    assert "unrecognized arguments: --resmue" in capsys.readouterr().err


def test_missing_data_directory_names_path_and_flag(tmp_path, capsys):
    missing = tmp_path / "no_svhn_here"
    path = _write_yaml(tmp_path, {**BASE, "data": {"name": "svhn", "root": str(missing)}})
    code = cli_main(["train", str(path), f"train.out_dir={tmp_path / 'y'}"])
    err = capsys.readouterr().err
    assert code == 2 and str(missing) in err and "data.download=true" in err


def test_wrong_image_size_or_channels_are_clear_errors(tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(30):
        Image.new("RGB", (24 if i == 0 else 16, 16), (i * 8, 0, 0)).save(pics / f"{i}.png")
    folder = {"name": "image_folder", "root": str(pics), "image_size": 16, "resize": False,
              "val_percent": 0.0, "test_percent": 0.0}
    cfg = RunConfig.from_dict({**BASE, "data": folder})
    from seqvae.build import build_data

    data = build_data(cfg, "train")
    bad = [i for i, f in enumerate(data.files) if f.name == "0.png"][0]
    with pytest.raises(ValueError, match=r"0\.png is 24×16 but data.image_size is 16"):
        data[bad]
    # a model built for 3-channel 16×16 frames refuses 1-channel data with a clear message
    model = _tiny_model()
    from seqvae.evaluation.elbo import check_batch

    with pytest.raises(ValueError, match=r"frames of shape \(1, 16, 16\).*built for \(3, 16, 16\)"):
        check_batch(model, torch.zeros(2, 1, 1, 16, 16))


def test_corrupt_checkpoint_is_a_clear_error_and_untouched(tmp_path, capsys):
    train(_cfg(tmp_path, "c"), progress=False)
    ckpt = tmp_path / "c" / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    truncated = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(ckpt)
    assert cli_main(["eval", str(ckpt)]) == 2
    assert "not a readable seqvae checkpoint" in capsys.readouterr().err
    with pytest.raises(CheckpointError):
        train(_cfg(tmp_path, "c", "train.steps=12"), resume=True, progress=False)
    assert ckpt.read_bytes() == truncated
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "c").iterdir())


def test_eval_and_sample_from_checkpoint(tmp_path, capsys):
    train(_cfg(tmp_path, "e"), progress=False)
    assert cli_main(["eval", str(tmp_path / "e"), "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["step"] == 6 and result["examples"] == 16
    # the command reports what the library computes on the checkpoint's model and test split ...
    from seqvae.build import build_data
    from seqvae.evaluation.elbo import evaluate_elbo

    model, cfg, payload = load_model(tmp_path / "e")
    from seqvae import amp

    cpu = torch.device("cpu")
    direct = evaluate_elbo(model, build_data(cfg, "test"), cfg.train.batch_size, cpu, amp.resolve("auto", cpu))
    for key in ("neg_elbo", "nll", "kl", "bpd"):
        assert result[key] == pytest.approx(direct[key], rel=1e-6), key
    # ... and its σ is the EMA the checkpoint holds (App. C: evaluation uses the EMA)
    assert result["sigma_ema"] == pytest.approx(float(payload["model"]["likelihood.ema_sigma2"]) ** 0.5, rel=1e-6)
    assert cli_main(["sample", str(tmp_path / "e" / "checkpoint.pt"), "--num", "9",
                     "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size[0] > 16 * 3


def test_time_limit_ends_the_run_normally(tmp_path):
    run = train(_cfg(tmp_path, "t", "train.steps=1000", "train.time_limit_minutes=0.00001"), progress=False)
    payload = load_checkpoint(run / "checkpoint.pt")
    assert 1 <= payload["step"] < 1000
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["split"] == "test" and lines[-1]["step"] == payload["step"]


# ------------------------------------------------- skipped updates (issues 11 and 17)
class _NaNPixel(torch.utils.data.Dataset):
    """The wrapped split with one NaN pixel in every item (float frames in [0, 1])."""

    def __init__(self, base):
        self.base, self.spec = base, base.spec

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        frames = self.base[index]["frames"].float() / 255
        frames[0, 0, 3, 5] = float("nan")
        return {"frames": frames}


def _poison_training_data(monkeypatch):
    import seqvae.training.session as train_module

    real = train_module.build_data
    monkeypatch.setattr(train_module, "build_data",
                        lambda cfg, split: _NaNPixel(real(cfg, split)) if split == "train" else real(cfg, split))


def _records(run, split):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


def test_nan_pixel_step_is_skipped_and_leaves_sigma_ema_unchanged(tmp_path, monkeypatch):
    run = train(_cfg(tmp_path, "n", "train.steps=3"), progress=False)
    good = load_checkpoint(run / "checkpoint.pt")
    _poison_training_data(monkeypatch)
    train(_cfg(tmp_path, "n", "train.steps=4"), resume=True, progress=False)   # step 4 sees a NaN pixel
    after = load_checkpoint(run / "checkpoint.pt")
    assert after["step"] == 4
    for key, value in good["model"].items():   # the update was skipped and the EMA did not take the NaN σ*
        assert torch.equal(after["model"][key], value), key
    assert torch.isfinite(after["model"]["likelihood.ema_sigma2"])
    # and Adam's moments and step counts too (a zeroed gradient would still move them)
    for key, state in good["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(after["optimizer"]["state"][key][name], value), (key, name)
    assert _records(run, "train")[-1]["skipped"] == 1 and _records(run, "train")[-1]["skipped_frac"] == 1.0
    test = _records(run, "test")[-1]
    assert test["step"] == 4 and math.isfinite(test["neg_elbo"]) and math.isfinite(test["sigma_ema"])


def test_run_of_nonfinite_steps_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path, monkeypatch, capsys):
    run = train(_cfg(tmp_path, "s", "train.steps=3"), progress=False)
    ckpt = run / "checkpoint.pt"
    before = ckpt.read_bytes()
    _poison_training_data(monkeypatch)
    with pytest.raises(UpdatesSkippedError) as err:   # steps 4..8 skipped; step 6's checkpoint is deferred
        train(_cfg(tmp_path, "s", "train.steps=100", "train.max_consecutive_skips=5"), resume=True, progress=False)
    message = str(err.value)
    assert "5 updates in a row were skipped" in message and "first skipped step was 4" in message
    assert "gradient norms nan" in message and "train.max_consecutive_skips=5" in message
    assert "NaN/Inf pixels" in message
    assert ckpt.read_bytes() == before
    assert load_checkpoint(ckpt)["step"] == 3
    lines = _records(run, "train")
    assert lines[-1]["step"] == 8 and lines[-1]["skipped_frac"] == 1.0   # the stop writes its window first
    assert sum(r["skipped"] for r in lines if r["step"] > 3) == 5
    # through the CLI: one message, exit status 2, no traceback
    path = _write_yaml(tmp_path, apply_overrides(BASE, [f"train.out_dir={run}"]))
    capsys.readouterr()   # a resumed run takes its config from the checkpoint, changed by overrides
    assert cli_main(["train", str(path), "--resume", "train.steps=100", "train.max_consecutive_skips=5"]) == 2
    captured = capsys.readouterr()
    assert "seqvae train: error: 5 updates in a row were skipped" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert ckpt.read_bytes() == before


def test_skip_and_clip_fractions_are_logged_and_clipping_every_step_warns(tmp_path):
    with pytest.warns(RuntimeWarning, match=r"train.grad_clip=0.001 clipped 100% of the last 5 updates"):
        run = train(_cfg(tmp_path, "c", "train.grad_clip=0.001", "train.skip_warmup=0", "train.steps=10",
                         "train.log_every=5"), progress=False)
    lines = _records(run, "train")
    assert [r["clipped_frac"] for r in lines] == [1.0, 1.0]
    assert [r["skipped_frac"] for r in lines] == [0.0, 0.0]
    assert all(r["grad_norm_median"] > 0.001 for r in lines)


def test_old_absolute_skip_setting_is_refused_by_name():
    raw = apply_overrides(BASE, ["train.skip_grad_norm=1000"])
    with pytest.raises(ConfigError, match="train.skip_grad_norm_abs"):
        RunConfig.from_dict(raw)
    # configs saved before the change carry the old default 0 and still load (old checkpoints)
    cfg = RunConfig.from_dict(apply_overrides(BASE, ["train.skip_grad_norm=0.0"]))
    assert cfg.train.skip_grad_factor > 1 and cfg.train.skip_grad_norm_abs == 0


def test_dry_run_writes_nothing_and_says_so(tmp_path, capsys):
    import warnings

    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(apply_overrides(BASE, [f"train.out_dir={tmp_path / 'dry'}"])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # no library warning leaks to the user
        assert cli_main(["train", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: one step done" in out and "nothing was written" in out and "run folder" not in out
    assert not (tmp_path / "dry").exists()
