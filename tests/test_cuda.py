"""The CUDA code paths (marked ``cuda``: skipped without a GPU; tools/gpu_check.sh runs them).

Tolerances, stated:
* mixed precision: 50 Adam steps of a small dcgan64 SVG-LP from the same start on the same
  batches; every loss finite, and the mean −ELBO of steps 41–50 within 3 % of fp32's
  (bf16 keeps 8 mantissa bits: per-step values differ by ~0.1–1 %, trajectories drift).
* channels_last vs contiguous: the same −ELBO within 1e-4 relative and the whole gradient
  vector within 1e-3 relative L2 (TF32 off; other kernels sum in another order; a wrong
  layout would be off by O(1)). Biases before BatchNorm have ~0 gradients (pure rounding),
  so no per-tensor relative check.
* rollouts on GPU: the same seed gives bit-identical frames twice (graph path), and the
  graph path matches the graph-free path within 2e-3 (kernels differ per chunk shape).
"""
import copy
import json

import pytest
import torch

from seqvae.config import RunConfig
from seqvae.control.rollout import rollout
from seqvae.data.spec import DataSpec
from seqvae.likelihoods.gaussian import OptimalSigmaGaussian
from seqvae.loading import load_model
from seqvae.models.svg import SVGConfig, build_svg
from seqvae.training import train

pytestmark = pytest.mark.cuda
DEV = torch.device("cuda")


def _svg(actions=False):
    torch.manual_seed(0)
    cfg = SVGConfig(backbone="dcgan64", width=32, g_dim=64, z_dim=8, rnn_size=64, n_past=2, n_future=4,
                    action_conditioned=actions)
    return build_svg(cfg, OptimalSigmaGaussian(), DataSpec(3, 64, 64, 6, 4 if actions else 0)).to(DEV)


def _batches(n, b=8):
    g = torch.Generator().manual_seed(3)
    base = torch.rand(b, 1, 3, 64, 64, generator=g)
    # smooth moving content so the model can learn something in 50 steps
    return [(base + 0.05 * torch.randn(b, 6, 3, 64, 64, generator=g)).clamp(0, 1).to(DEV) for _ in range(n)]


def _train(dtype, steps=50):
    model = _svg()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    losses = []
    for i, x in enumerate(_batches(steps)):
        torch.manual_seed(i)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            out = model({"frames": x})
        scaler.scale(out.loss).backward()
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        model.commit_step(True)
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.neg_elbo.mean().detach()))
    return losses


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16_scaler"])
def test_mixed_precision_steps_match_fp32(dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    ref, got = _train(None), _train(dtype)
    assert all(torch.isfinite(torch.tensor(got)))
    assert ref[-1] < ref[0]                                   # fp32 learned something
    a, b = sum(ref[-10:]) / 10, sum(got[-10:]) / 10
    assert abs(a - b) <= 0.03 * abs(a), (a, b)


def test_channels_last_equals_contiguous():
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        m1 = _svg()
        m2 = copy.deepcopy(m1).to(memory_format=torch.channels_last)
        x = _batches(1)[0]
        outs = []
        for m in (m1, m2):
            torch.manual_seed(0)
            out = m({"frames": x})
            out.loss.backward()
            outs.append((float(out.loss.detach()), [p.grad for p in m.parameters()]))
        assert abs(outs[0][0] - outs[1][0]) <= 1e-4 * abs(outs[0][0])
        g1, g2 = (torch.cat([g.flatten() for g in o[1]]) for o in outs)
        assert float((g1 - g2).norm() / g1.norm()) <= 1e-3
    finally:
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True


def test_rollout_reproducible_on_gpu():
    model = _svg(actions=True).eval()
    ctx = torch.rand(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(DEV)
    actions = torch.randn(2, 20, 5, 4, generator=torch.Generator().manual_seed(2)).to(DEV)
    run = [rollout(model, ctx, actions, 3, generator=torch.Generator().manual_seed(0), precision="fp32", max_batch=64)
           for _ in range(2)]
    assert torch.equal(run[0].frames, run[1].frames)
    plain = rollout(model, ctx, actions, 3, generator=torch.Generator().manual_seed(0), precision="fp32", max_batch=64,
                    cuda_graphs=False)
    torch.testing.assert_close(run[0].frames, plain.frames, rtol=0, atol=2e-3)


def test_checkpoint_written_on_gpu_loads_on_cpu(tmp_path):
    base = {
        "data": {"name": "shapes", "image_size": 16, "train_size": 32, "test_size": 8, "val_size": 8},
        "model": {"name": "conv_vae", "base_channels": 8, "latent_dim": 4},
        "likelihood": {"name": "optimal_sigma"},
        "train": {"steps": 3, "batch_size": 8, "log_every": 1, "eval_every": 0, "eval_batches": 1,
                  "image_every": 0, "checkpoint_every": 0, "out_dir": str(tmp_path / "run"), "compile": False},
    }
    train(RunConfig.from_dict(base), progress=False)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["device"].startswith("cuda")
    model, _, payload = load_model(tmp_path / "run", device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert payload["step"] == 3
    x = torch.rand(2, 1, 3, 16, 16)
    with torch.no_grad():
        assert torch.isfinite(model({"frames": x}).loss)
