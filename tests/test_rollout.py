"""seqvae.control.rollout: batched, reproducible conditional rollouts with common random numbers.

The tiny models have their BatchNorm statistics set from one batch (as a trained model
has them); with the initial statistics the frames barely depend on actions or latents
and the equality tests below would hold vacuously. Each test also checks that the
things it compares DO differ where they should (other seed, other candidate, other
sample), by more than 1e-3.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from seqvae.control.rollout import RolloutResult, auto_max_batch, rollout
from seqvae.data.spec import DataSpec
from seqvae.likelihoods.gaussian import OptimalSigmaGaussian
from seqvae.models.svg import SVG, SVGConfig, build_svg

B, N_CTX, HORIZON, A, S = 2, 2, 3, 2, 2
# Different batch sizes may run different oneDNN convolution kernels (other summation
# orders), so results computed in different batches agree to float32 rounding, not bits.
# Tests that compare rollouts made in different batches run in fp32: under bf16 autocast
# (the "auto" precision on CPUs with native bf16) the kernels chosen per batch size round
# to bf16 differently (on Intel AMX up to 4e-3 on these frames), which is not what they test.
TOL = dict(rtol=0, atol=1e-5)
FP32 = dict(precision="fp32")




def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_svg(actions: bool = True, prior: str = "learned") -> SVG:
    """dcgan64 at width 16, g 32, z 4, rnn 32, with calibrated BatchNorm, in eval mode."""
    torch.manual_seed(0)
    cfg = SVGConfig(backbone="dcgan64", width=16, g_dim=32, z_dim=4, rnn_size=32, n_past=N_CTX, n_future=HORIZON,
                    prior=prior, action_conditioned=actions)
    model = build_svg(cfg, OptimalSigmaGaussian(), DataSpec(3, 64, 64, N_CTX + HORIZON, A if actions else 0))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    batch = {"frames": torch.rand(4, 5, 3, 64, 64, generator=gen(9)),
             "actions": 2 * torch.randn(4, 5, A, generator=gen(8))}
    with torch.no_grad():
        model(batch, generator=gen(7))
    # Make actions and latents matter visibly (a trained model's predictor uses them).
    with torch.no_grad():
        model.predictor.embed.weight.mul_(4.0)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> SVG:
    return tiny_svg()


def context(b: int = B) -> torch.Tensor:
    return torch.rand(b, N_CTX, 3, 64, 64, generator=gen(1))


def candidates(k: int = 3) -> torch.Tensor:
    return 2 * torch.rand(B, k, HORIZON, A, generator=gen(2)) - 1


def test_same_seed_same_rollouts_other_seed_other_rollouts(model):
    ctx, acts = context(), candidates()
    r1 = rollout(model, ctx, acts, S, generator=gen(5))
    r2 = rollout(model, ctx, acts, S, generator=gen(5))
    r3 = rollout(model, ctx, acts, S, generator=gen(6))
    assert isinstance(r1, RolloutResult) and r1.frames.shape == (B, 3, S, HORIZON, 3, 64, 64)
    assert 0 <= r1.frames.min() and r1.frames.max() <= 1
    torch.testing.assert_close(r1.frames, r2.frames, rtol=0, atol=0)
    assert (r1.frames - r3.frames).abs().max() > 1e-3
    # the S samples of one candidate differ (their latents differ)
    assert (r1.frames[:, :, 0] - r1.frames[:, :, 1]).abs().amax(dim=(-4, -3, -2, -1)).min() > 1e-3


def test_k_candidates_in_one_call_equal_k_separate_calls(model):
    """Common random numbers: the noise is drawn per (b, s) and shared by the candidates."""
    ctx, acts = context(), candidates(3)
    together = rollout(model, ctx, acts, S, generator=gen(5), **FP32)
    for k in range(3):
        alone = rollout(model, ctx, acts[:, k:k + 1], S, generator=gen(5), **FP32)
        torch.testing.assert_close(together.frames[:, k:k + 1], alone.frames, **TOL)
        torch.testing.assert_close(together.noise, alone.noise, rtol=0, atol=0)
    # ... and the candidates do lead to different futures
    assert (together.frames[:, 0] - together.frames[:, 1]).abs().max() > 1e-3
    # identical candidates see identical noise: identical futures
    same = rollout(model, ctx, acts[:, :1].expand(B, 2, HORIZON, A), S, generator=gen(5), **FP32)
    torch.testing.assert_close(same.frames[:, 0], same.frames[:, 1], **TOL)


def test_the_candidates_of_a_context_share_one_pass_over_it(model):
    """The K candidates of a (context, sample) start from one state: the encoder sees each
    context once per (b, s) and then the predicted frames it feeds back (all but the last),
    one per rollout; a rollout chunk holding part of a (b, s)'s candidates takes that
    context in again (chunks are independent). The frames equal per-candidate predict calls
    (tests above)."""
    frames_encoded = []
    hook = model.encoder.register_forward_hook(lambda m, inputs, out: frames_encoded.append(inputs[0].shape[0]))
    try:
        k = 3
        rollout(model, context(), candidates(k), S, generator=gen(5), **FP32, max_batch=1000)
        assert frames_encoded == [B * S * N_CTX] + [B * k * S] * (HORIZON - 1)
        frames_encoded.clear()
        rollout(model, context(), candidates(k), S, generator=gen(5), **FP32, max_batch=k * S)   # one b per chunk
        assert frames_encoded == ([S * N_CTX] + [k * S] * (HORIZON - 1)) * B
    finally:
        hook.remove()


def test_chunked_equals_unchunked(model):
    ctx, acts = context(), candidates(3)
    full = rollout(model, ctx, acts, S, generator=gen(5), **FP32, max_batch=1000)
    for max_batch in (1, 5):
        chunked = rollout(model, ctx, acts, S, generator=gen(5), **FP32, max_batch=max_batch)
        torch.testing.assert_close(chunked.frames, full.frames, **TOL)


def test_auto_chunking_fits_the_budget(model):
    """A memory budget of four rows gives chunks of four rows, and the same result."""
    ctx, acts = context(), candidates(3)
    per_row = model.rollout_row_bytes(HORIZON, keep_frames=True)
    assert per_row > 4 * 3 * 64 * 64 * (HORIZON + 1)  # at least the kept frames
    # each backbone's own count of its skip maps is what one encoded frame holds
    from seqvae.nets.dcgan64 import DCGANEncoder64
    from seqvae.nets.vgg64 import VGGEncoder64

    for encoder in (DCGANEncoder64(8, 3, nf=4), VGGEncoder64(8, 3, nf=4)):
        _, skips = encoder.eval()(torch.zeros(1, 3, 64, 64))
        assert encoder.skip_features == sum(s.numel() for s in skips), type(encoder).__name__
    assert auto_max_batch(model, HORIZON, torch.device("cpu"), True, budget_bytes=4 * per_row) == 4
    full = rollout(model, ctx, acts, S, generator=gen(5), **FP32)
    budgeted = rollout(model, ctx, acts, S, generator=gen(5), **FP32, memory_budget=4 * per_row)
    torch.testing.assert_close(budgeted.frames, full.frames, **TOL)


def test_costs_equal_cost_fn_of_the_returned_frames(model):
    """Costs are computed chunk by chunk, with each rollout's (b, k, s) passed along."""
    ctx, acts = context(), candidates(3)
    goals = torch.rand(B, 3, 64, 64, generator=gen(3))
    seen_rows = []

    def cost_fn(frames: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        seen_rows.append(index.clone())
        b, k, s = index.unbind(1)
        return ((frames[:, -1] - goals[b]) ** 2).mean(dim=(1, 2, 3)) + 10.0 * b + 100.0 * k + 1000.0 * s

    out = rollout(model, ctx, acts, S, generator=gen(5), **FP32, cost_fn=cost_fn, max_batch=4)
    expected = ((out.frames[:, :, :, -1] - goals[:, None, None]) ** 2).mean(dim=(-3, -2, -1))
    expected = (expected + 10.0 * torch.arange(B)[:, None, None] + 100.0 * torch.arange(3)[:, None]
                + 1000.0 * torch.arange(S))
    assert out.costs.shape == (B, 3, S)
    torch.testing.assert_close(out.costs, expected, rtol=1e-6, atol=1e-5)
    assert len(seen_rows) == 3  # 12 rollouts in chunks of 4
    # without frames the costs are the same
    lean = rollout(model, ctx, acts, S, generator=gen(5), **FP32, cost_fn=cost_fn, return_frames=False)
    assert lean.frames is None
    torch.testing.assert_close(lean.costs, out.costs, **TOL)


def test_context_actions_are_used_and_default_to_zeros(model):
    """Rollouts equal SVG.predict with [context actions, candidate] and the returned noise."""
    ctx, acts = context(), candidates(1)
    ca = torch.rand(B, N_CTX - 1, A, generator=gen(4)) * 2 - 1
    with_ca = rollout(model, ctx, acts, 1, generator=gen(5), context_actions=ca, precision="fp32")
    default = rollout(model, ctx, acts, 1, generator=gen(5))
    zeros = rollout(model, ctx, acts, 1, generator=gen(5), context_actions=torch.zeros(B, N_CTX - 1, A))
    torch.testing.assert_close(default.frames, zeros.frames, rtol=0, atol=0)
    assert (with_ca.frames - default.frames).abs().max() > 1e-3
    direct = model.predict(ctx, HORIZON, torch.cat([ca, acts[:, 0]], 1), noise=with_ca.noise[:, 0])
    torch.testing.assert_close(with_ca.frames[:, 0, 0], direct, **TOL)


def test_uint8_context_and_model_mode(model):
    ctx = (context() * 255).round().to(torch.uint8)
    acts = candidates(2)
    a = rollout(model, ctx, acts, 1, generator=gen(5))
    b = rollout(model, ctx.float() / 255, acts, 1, generator=gen(5))
    torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=0)
    model.train()
    try:
        c = rollout(model, ctx.float() / 255, acts, 1, generator=gen(5))
        assert model.training  # the mode is restored ...
    finally:
        model.eval()
    torch.testing.assert_close(c.frames, b.frames, rtol=0, atol=0)  # ... and the rollout ran in eval mode


def test_bf16_autocast_close_to_fp32(model):
    ctx, acts = context(), candidates(2)
    fp32 = rollout(model, ctx, acts, 1, generator=gen(5), precision="fp32")
    bf16 = rollout(model, ctx, acts, 1, generator=gen(5), precision="bf16")
    assert bf16.frames.dtype == torch.float32
    err = (bf16.frames - fp32.frames).abs()
    assert err.mean() < 0.01 and err.max() < 0.1
    with pytest.raises(ValueError, match="fp16"):
        rollout(model, ctx, acts, 1, generator=gen(5), precision="fp16")


def test_action_free_model_with_one_candidate():
    model = tiny_svg(actions=False)
    ctx = context()
    out = rollout(model, ctx, None, 3, generator=gen(5), horizon=HORIZON, precision="fp32")
    assert out.frames.shape == (B, 1, 3, HORIZON, 3, 64, 64)
    assert out.noise.shape == (B, 3, N_CTX - 1 + HORIZON, 4)
    direct = model.predict(ctx, HORIZON, noise=out.noise[:, 2])
    torch.testing.assert_close(out.frames[:, 0, 2], direct, **TOL)
    assert (out.frames[:, 0, 0] - out.frames[:, 0, 1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="not action-conditioned"):
        rollout(model, ctx, candidates(), 1, generator=gen(5))
    with pytest.raises(ValueError, match="horizon"):
        rollout(model, ctx, None, 1, generator=gen(5))


def test_deterministic_model_needs_no_noise():
    model = tiny_svg(prior="none")
    out = rollout(model, context(), candidates(2), 2, generator=gen(5))
    assert out.noise is None
    torch.testing.assert_close(out.frames[:, :, 0], out.frames[:, :, 1], rtol=0, atol=0)


def test_bad_shapes_give_clear_errors(model):
    ctx, acts = context(), candidates()
    with pytest.raises(ValueError, match=r"context must be \[B, n_ctx, C, H, W\]"):
        rollout(model, ctx[0], acts, 1, generator=gen())
    with pytest.raises(ValueError, match="built for"):
        rollout(model, torch.rand(B, N_CTX, 1, 64, 64), acts, 1, generator=gen())
    with pytest.raises(ValueError, match="action-conditioned"):
        rollout(model, ctx, None, 1, generator=gen(), horizon=3)
    with pytest.raises(ValueError, match=r"actions must be \[B=2, K, horizon, A=2\]"):
        rollout(model, ctx, acts[..., :1], 1, generator=gen())
    with pytest.raises(ValueError, match=r"actions must be"):
        rollout(model, ctx, acts[0], 1, generator=gen())
    with pytest.raises(ValueError, match="context_actions"):
        rollout(model, ctx, acts, 1, generator=gen(), context_actions=torch.zeros(B, 3, A))
    with pytest.raises(ValueError, match="num_samples"):
        rollout(model, ctx, acts, 0, generator=gen())
    with pytest.raises(ValueError, match="horizon=5"):
        rollout(model, ctx, acts, 1, generator=gen(), horizon=5)
    with pytest.raises(ValueError, match=r"cost_fn must return a tensor \[n=6\]"):
        rollout(model, ctx, acts, 1, generator=gen(), cost_fn=lambda f, b: f.mean(dim=(2, 3, 4)))


# ------------------------------------------------------------------ seqvae rollout
def make_checkpoint(path, actions: bool = True):
    """A checkpoint of a tiny (untrained) SVG on the pusher data, as training writes it."""
    from dataclasses import asdict

    from seqvae.build import build_model
    from seqvae.checkpoint import save_checkpoint
    from seqvae.config import RunConfig

    cfg = RunConfig.from_dict({
        "data": {"name": "pusher", "seq_len": 5, "num_test": 3, "action_conditioned": actions},
        "model": {"name": "svg", "backbone": "dcgan64", "width": 16, "g_dim": 32, "z_dim": 4, "rnn_size": 32,
                  "n_past": 2, "n_future": 3, "n_eval": 3, "action_conditioned": actions},
        "likelihood": {"name": "optimal_sigma"},
    })
    spec = DataSpec(3, 64, 64, 5, 2 if actions else 0)
    torch.manual_seed(0)
    model = build_model(cfg, spec)
    save_checkpoint(path, {"config": cfg.to_dict(), "spec": asdict(spec), "step": 7, "model": model.state_dict()})
    return path


def run_cli(argv: list[str]) -> None:
    from seqvae.cli import parse

    args = parse(argv)
    args.func(args)


def test_rollout_command_from_index_npz_and_video(tmp_path):
    import numpy as np

    from seqvae.render import read_video, write_mp4

    ckpt = make_checkpoint(tmp_path / "ckpt.pt")
    # --index: the test sequence's own actions, ground truth shown
    run_cli(["rollout", str(ckpt), "--index", "1", "--samples", "2", "--out", str(tmp_path / "a"), "--device", "cpu"])
    out = np.load(tmp_path / "a.npz")
    assert out["frames"].dtype == np.uint8 and out["frames"].shape == (1, 2, 3, 3, 64, 64)
    assert read_video(tmp_path / "a.mp4").shape[0] == 2 + 3
    # = the library's rollout with the recorded actions: a_0 leads through the context,
    # a_1..a_3 are the candidate
    from seqvae.build import build_data
    from seqvae.loading import load_model

    model, cfg, _ = load_model(ckpt)
    seq = build_data(cfg, "test")[1]
    ref = rollout(model, seq["frames"][None, :2], seq["actions"][None, None, 1:4], 2,
                  generator=torch.Generator().manual_seed(0), context_actions=seq["actions"][None, :1])
    want = (ref.frames[0] * 255).round().to(torch.uint8).numpy()
    assert np.abs(out["frames"].astype(int) - want).max() <= 1
    # the same rollout again gives the same bits (seeded)
    run_cli(["rollout", str(ckpt), "--index", "1", "--samples", "2", "--out", str(tmp_path / "b"), "--device", "cpu"])
    assert np.array_equal(np.load(tmp_path / "b.npz")["frames"], out["frames"])

    # --npz context (channel-last uint8) + K = 3 candidates from an actions file
    item = build_data(cfg, "test")[0]
    np.savez(tmp_path / "ctx.npz", frames=item["frames"].permute(0, 2, 3, 1).numpy())
    acts = np.random.default_rng(0).uniform(-1, 1, (3, 4, 2)).astype(np.float32)
    np.savez(tmp_path / "acts.npz", actions=acts)
    run_cli(["rollout", str(ckpt), "--npz", str(tmp_path / "ctx.npz"), "--actions", str(tmp_path / "acts.npz"),
             "--samples", "2", "--seed", "3", "--out", str(tmp_path / "c"), "--device", "cpu"])
    c = np.load(tmp_path / "c.npz")
    assert c["frames"].shape == (3, 2, 4, 3, 64, 64)
    np.testing.assert_array_equal(c["context"], item["frames"][:2].numpy())
    # what the library gives for the same inputs (zero context actions by default)
    expected = rollout(model, item["frames"][None, :2], torch.from_numpy(acts)[None], 2,
                       generator=torch.Generator().manual_seed(3))
    want = (expected.frames[0] * 255).round().to(torch.uint8).numpy()
    assert np.abs(c["frames"].astype(int) - want).max() <= 1

    # --video context
    write_mp4(tmp_path / "ctx.mp4", item["frames"].permute(0, 2, 3, 1).numpy())
    run_cli(["rollout", str(ckpt), "--video", str(tmp_path / "ctx.mp4"), "--actions", str(tmp_path / "acts.npz"),
             "--samples", "1", "--out", str(tmp_path / "d"), "--device", "cpu"])
    assert np.load(tmp_path / "d.npz")["frames"].shape == (3, 1, 4, 3, 64, 64)


def test_rollout_command_errors(tmp_path):
    import numpy as np

    ckpt = make_checkpoint(tmp_path / "ckpt.pt")
    free = make_checkpoint(tmp_path / "free.pt", actions=False)
    base = ["--device", "cpu", "--out", str(tmp_path / "x")]
    with pytest.raises(FileNotFoundError):
        run_cli(["rollout", str(tmp_path / "nope.pt"), "--index", "0", *base])
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_cli(["rollout", str(ckpt), "--npz", str(tmp_path / "nope.npz"), *base])
    with pytest.raises(ValueError, match="exactly one context source"):
        run_cli(["rollout", str(ckpt), *base])
    np.savez(tmp_path / "small.npz", frames=np.zeros((3, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="do not match the model's 3×64×64"):
        run_cli(["rollout", str(ckpt), "--npz", str(tmp_path / "small.npz"), *base])
    np.savez(tmp_path / "ctx.npz", frames=np.zeros((3, 3, 64, 64), np.uint8))
    np.savez(tmp_path / "a3.npz", actions=np.zeros((2, 4, 3), np.float32))
    with pytest.raises(ValueError, match="have 3 dimensions but the model takes 2"):
        run_cli(["rollout", str(ckpt), "--npz", str(tmp_path / "ctx.npz"),
                 "--actions", str(tmp_path / "a3.npz"), *base])
    with pytest.raises(ValueError, match="pass --actions"):
        run_cli(["rollout", str(ckpt), "--npz", str(tmp_path / "ctx.npz"), *base])
    np.savez(tmp_path / "a2.npz", actions=np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="not action-conditioned"):
        run_cli(["rollout", str(free), "--npz", str(tmp_path / "ctx.npz"),
                 "--actions", str(tmp_path / "a2.npz"), *base])
    with pytest.raises(ValueError, match="out of range"):
        run_cli(["rollout", str(ckpt), "--index", "99", *base])
    # an action-free model needs only a horizon
    run_cli(["rollout", str(free), "--npz", str(tmp_path / "ctx.npz"), "--horizon", "2", "--samples", "3", *base])
    assert np.load(tmp_path / "x.npz")["frames"].shape == (1, 3, 2, 3, 64, 64)


def test_rollout_copy_is_the_same_function_with_batchnorm_folded(model):
    """The planner's copy: no BatchNorm left (folded into the convolutions), weights in
    channels_last, the same rollouts as the model in fp32 up to rounding (1e-5 on frames in
    [0, 1], as for batches of other sizes), and the model itself untouched."""
    from seqvae.control.rollout import rollout_copy

    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = rollout_copy(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 9     # dcgan64: 5 encoder + 4 decoder
    assert fast.encoder.c1[0].weight.is_contiguous(memory_format=torch.channels_last)
    ctx, acts = context(), candidates(3)
    ours = rollout(fast, ctx, acts, S, generator=gen(5), **FP32)
    theirs = rollout(model, ctx, acts, S, generator=gen(5), **FP32)
    torch.testing.assert_close(ours.frames, theirs.frames, **TOL)
    assert (ours.frames[:, 0] - ours.frames[:, 1]).abs().max() > 1e-3          # the actions still matter
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # a model without BatchNorm is planned with as it is (no copy)
    plain = nn.Linear(2, 2)
    assert rollout_copy(plain) is plain
