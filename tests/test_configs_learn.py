"""Every shipped config learns (issue 17): built as written, trained for a few dozen steps
with its own train settings, its updates are applied (parameters move, none skipped) and
its training loss goes down. A config that cannot learn — e.g. an absolute skip threshold
below the gradient norms its loss produces, which skips every update — fails here.

Only what a CPU test needs is shrunk: steps, batch size, the eval/image/checkpoint
cadence, the DataLoader workers and thread count (``num_workers``/``threads`` do not change
what is computed). Data sets that must be downloaded (BAIR, SVHN, CIFAR-10, CelebA, MNIST)
are replaced by small procedural data of the same :class:`DataSpec` (same frames, channels,
size, sequence length and action size); the repo's own procedural sets are used as they are.
The fast variant also narrows the models that are far too slow for a few-second CPU test
(see ``FAST_WIDTH``); the ``slow`` variant trains every model at full size.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import seqvae.training.session as train_module
from seqvae.checkpoint import load_checkpoint
from seqvae.config import RunConfig
from seqvae.data.images import _CHANNELS, _DEFAULT_SIZE, ShapesImages
from seqvae.data.spec import DataSpec
from seqvae.training import train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name != "plan")  # run configs
IDS = [str(p.relative_to(ROOT / "configs")) for p in CONFIGS]

# Width-only shrinking for the fast variant, per model, because the full models are far too
# slow for a few-second CPU test (one thread, batch 4, measured on the shared 2-core dev
# machine): the 15-layer HVAE takes ~0.4 s per step, the BAIR SVG-LP (vgg64, 22.8 M
# parameters, 12 frames of 64×64) ~10 s. Narrower layers keep the depth, latents, head,
# data and every train setting that decides which updates are applied.
FAST_WIDTH = {
    "hvae": ["model.channels=16"],
    "svg": ["model.width=8", "model.g_dim=32", "model.rnn_size=32"],
}



# ------------------------------------------------------------ synthetic stand-ins
class SyntheticFrames(Dataset):
    """Learnable procedural data of a given spec: shapes for images; for video a bright
    square moving at a constant speed (its velocity is the action, zero-padded to
    ``action_dim``). Item ``i`` is a pure function of ``(seed, i)``."""

    def __init__(self, spec: DataSpec, size: int, seed: int) -> None:
        self.spec, self.size, self.seed = spec, size, seed
        self.images = ShapesImages(size, "train", spec.height, spec.channels, seed) if spec.seq_len == 1 else None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.images is not None:
            item = {"frames": self.images[index]["frames"]}
        else:
            s = self.spec
            g = torch.Generator().manual_seed(self.seed * 7919 + index)
            side = s.height // 4
            start = torch.randint(0, s.height - side, (2,), generator=g)
            velocity = torch.randint(-2, 3, (2,), generator=g)
            frames = torch.full((s.seq_len, s.channels, s.height, s.width), 40, dtype=torch.uint8)
            colour = torch.randint(128, 256, (s.channels, 1, 1), generator=g, dtype=torch.uint8)
            for t in range(s.seq_len):
                r, c = ((start + t * velocity) % (s.height - side)).tolist()
                frames[t, :, r:r + side, c:c + side] = colour
            item = {"frames": frames}
            if s.action_dim:
                actions = torch.zeros(s.seq_len, s.action_dim)
                actions[:, :2] = velocity.float() / 2
                item["actions"] = actions
        return item


def downloaded_spec(data_cfg, split: str) -> DataSpec | None:
    """The spec a data set that must be downloaded would give, or None for the repo's own."""
    from seqvae.data import bair

    if data_cfg.name == "bair":
        seq_len = data_cfg.seq_len if split == "train" else data_cfg.eval_seq_len
        return DataSpec(bair.CHANNELS, bair.HEIGHT, bair.WIDTH, seq_len, action_dim=bair.ACTION_DIM)
    if data_cfg.name in _CHANNELS:  # svhn, cifar10, celeba, mnist through torchvision
        size = data_cfg.image_size or _DEFAULT_SIZE[data_cfg.name]
        return DataSpec(_CHANNELS[data_cfg.name], size, size)
    return None


REAL_BUILD_DATA, REAL_BUILD_MODEL = train_module.build_data, train_module.build_model


def small_data(cfg: RunConfig, split: str):
    spec = downloaded_spec(cfg.data, split)
    if spec is not None:
        return SyntheticFrames(spec, 512 if split == "train" else 16, seed=0 if split == "train" else 1)
    return REAL_BUILD_DATA(cfg, split)


SMALL_REPO_DATA = {  # the repo's own procedural sets, fewer test items (generated lazily either way)
    "shapes": ["data.test_size=16"],
    "pusher": ["data.num_test=8"],
}


# ------------------------------------------------------------------ the check
def train_briefly(path: Path, tmp_path: Path, monkeypatch, steps: int, batch: int, fast: bool) -> dict:
    raw = RunConfig.load(path)
    overrides = [
        f"train.out_dir={tmp_path / 'run'}", f"train.steps={steps}", f"train.batch_size={batch}",
        "train.log_every=1", "train.eval_every=0", "train.eval_batches=1", "train.image_every=0",
        "train.checkpoint_every=0", "train.time_limit_minutes=0", "train.num_workers=0", "train.threads=0",
        "train.init_from=",   # a fine-tune's starting run is not on a fresh machine; learning from scratch is checked
        # the config's schedule at the test's length: the cosine already ends at `steps`, and
        # the warm-up keeps its fraction of the run (200 of 10 000 steps is no warm-up here)
        f"train.lr_warmup_steps={round(raw.train.lr_warmup_steps * steps / raw.train.steps)}",
        *SMALL_REPO_DATA.get(raw.data.name, []),
    ]
    if fast:
        overrides += FAST_WIDTH.get(raw.model.name, [])
    cfg = RunConfig.load(path, overrides)
    initial = {}

    def build_model(cfg_, spec):
        model = REAL_BUILD_MODEL(cfg_, spec)
        initial.update({k: v.detach().clone() for k, v in model.named_parameters()})
        return model

    monkeypatch.setattr(train_module, "build_data", small_data)
    monkeypatch.setattr(train_module, "build_model", build_model)
    run = train(cfg, progress=False)
    final = load_checkpoint(run / "checkpoint.pt")["model"]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {"cfg": cfg, "initial": initial, "final": final, "fine_tune": bool(raw.train.init_from),
            "train": [r for r in records if r["split"] == "train"],
            "test": [r for r in records if r["split"] == "test"]}


def assert_learns(result: dict, steps: int, spikes_allowed: int = 0) -> None:
    train = result["train"]
    assert [r["step"] for r in train] == list(range(1, steps + 1))
    # every update was applied (none skipped, during or after warm-up; or at most `spikes_allowed`
    # single spikes once the relative rule is in force), every parameter moved
    skipped = [r["step"] for r in train if r["skipped"]]
    consecutive = any(b == a + 1 for a, b in zip(skipped, skipped[1:]))
    assert len(skipped) <= spikes_allowed and not consecutive, (
        f"skipped updates at steps {skipped} (grad norms {[round(r['grad_norm']) for r in train]})")
    unchanged = [k for k, v in result["initial"].items() if torch.equal(v, result["final"][k])]
    assert not unchanged, f"parameters never updated: {unchanged[:5]}"
    assert all(math.isfinite(r["loss"]) for r in train)
    if result.get("fine_tune"):
        # a fine-tune's rate is sized for converged weights (e.g. 5e-5 in stage 3 of the shipped
        # models), too small to show descent from scratch in a few dozen steps: its updates are
        # checked above; descent is checked for every config that trains from scratch
        return
    # the training loss went down: the last fifth of the steps against the first fifth
    k = max(steps // 5, 3)
    first = sum(r["loss"] for r in train[:k]) / k
    last = sum(r["loss"] for r in train[-k:]) / k
    assert math.isfinite(last) and last < first - 0.01 * abs(first), (first, last)
    assert all(math.isfinite(r["neg_elbo"]) for r in result["test"])


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_shipped_config_builds_at_full_size(path):
    """The model and data spec each shipped config describes can be built as written (a
    bad width, an unknown backbone or a frame size the model cannot take fails here)."""
    cfg = RunConfig.load(path)
    for split in ("train", "test"):
        spec = downloaded_spec(cfg.data, split) or REAL_BUILD_DATA(cfg, split).spec
        model = REAL_BUILD_MODEL(cfg, spec)
        assert model.spec == spec and sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_shipped_config_learns(path, tmp_path, monkeypatch):
    steps = 30
    video = RunConfig.load(path).model.name == "svg"   # 12-frame 64×64 sequences: 2 per batch
    result = train_briefly(path, tmp_path, monkeypatch, steps=steps, batch=2 if video else 4, fast=True)
    assert_learns(result, steps)


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_shipped_config_learns_full_size(path, tmp_path, monkeypatch):
    """Full-size models, past the skip rule's warm-up (default 50 accepted updates), so the
    relative spike rule is in force for the last 30 steps. Minutes per config on a CPU
    (the BAIR SVG-LP ~10 s per step).

    One isolated skip is allowed there: at batch 4 (the shapes config trains at 128) the
    gradient norm is heavy-tailed, and a 10× spike is the rule doing its job, not a config
    that fights its guard (measured on an Intel Xeon with AMX, bf16, the shapes conv VAE:
    step 56's norm 13 005 against a median of about 1 100; norms of 700–9 600 around it).
    Two skips, or two in a row, would be."""
    steps = 80
    result = train_briefly(path, tmp_path, monkeypatch, steps=steps, batch=4, fast=False)
    assert_learns(result, steps, spikes_allowed=1)
