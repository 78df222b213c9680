"""train.compile: the compiled forward + loss equals the eager one, and later steps never recompile.

The comparisons compile with dynamo + AOT autograd and the ``aot_eager`` backend: the same
tracing, graph breaks, guards and (re)compilation decisions as inductor, without inductor's
code generation, which costs over two CPU minutes even for this tiny SVG on a shared
2-core machine (measured: 134 s). The inductor run is the ``slow`` test below.
"""
import copy
import json
import math

import pytest
import torch

from seqvae import compiled
from seqvae.build import build_data, build_model
from seqvae.checkpoint import load_checkpoint
from seqvae.config import ConfigError, RunConfig, apply_overrides
from seqvae.data.spec import DataSpec
from seqvae.likelihoods.gaussian import OptimalSigmaGaussian
from seqvae.models.svg import SVGConfig, build_svg
from seqvae.training import train

ELBO_RTOL = 1e-5     # relative, on the summed −ELBO (≈ 9e3 nats here)
GRAD_RTOL = 1e-5     # ‖g_c − g_e‖ / ‖g_e‖ over all parameters (aot_eager: 7e-7 measured; inductor 1e-4)


def _tiny_svg():
    torch.manual_seed(0)
    cfg = SVGConfig(backbone="dcgan64", width=8, g_dim=16, z_dim=4, rnn_size=16, n_past=2, n_future=2)
    return build_svg(cfg, OptimalSigmaGaussian(), DataSpec(3, 64, 64, 4, 0))


def _steps(model, fn, batches, lr=1e-3):
    """A few full Adam steps; returns the losses and the last step's gradients."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses, graphs = [], []
    for i, x in enumerate(batches):
        torch.manual_seed(100 + i)                     # the same posterior noise in both runs
        out = fn({"frames": x})
        out.loss.backward()
        losses.append(float(out.loss.detach()))
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
        model.commit_step(True)
        opt.zero_grad(set_to_none=True)
        graphs.append(compiled.graph_count())
    return losses, grads, graphs


def _check_same(eager, comp, grad_rtol=GRAD_RTOL):
    (le, ge, _), (lc, gc, graphs) = eager, comp
    for a, b in zip(le, lc):
        assert abs(a - b) <= ELBO_RTOL * abs(a), (le, lc)
    # the whole gradient vector: biases just before a BatchNorm have rounding-only gradients
    # (≈ 1e-4 of the others), so a per-tensor relative check would only measure rounding
    ge, gc = torch.cat([g.flatten() for g in ge]), torch.cat([g.flatten() for g in gc])
    rel = float((ge - gc).norm() / ge.norm())
    print(f"gradient relative L2 difference {rel:.2e}")
    assert rel <= grad_rtol, rel
    return graphs


def test_compiled_step_equals_eager_and_never_recompiles():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(2, 4, 3, 64, 64, generator=g) for _ in range(5)]
    model_e = _tiny_svg()
    model_c = copy.deepcopy(model_e)
    before = compiled.graph_count()
    eager = _steps(model_e, model_e, batches)
    graphs = _check_same(eager, _steps(model_c, compiled.compile_step(model_c, backend="aot_eager"), batches))
    assert graphs[0] == before + 1                   # it compiled, to ONE graph (the LSTMs inside it)
    assert graphs[1:] == [graphs[0]] * 4, graphs    # steps 2..5: no new graph, i.e. no recompilation
    # the parameters moved the same way (5 Adam steps), except the biases of convolutions
    # followed by BatchNorm: they do not change the output, their gradients are rounding
    # only, and Adam (÷ √v) turns those into full-size steps in random directions
    # (measured: ≤ 0.009 apart, every other parameter ≤ 2e-7).
    free = {f"{n}.0.bias" for n, m in model_e.named_modules()
            if isinstance(m, torch.nn.Sequential) and len(m) > 1 and isinstance(m[1], torch.nn.BatchNorm2d)}
    assert len(free) >= 8
    start = dict(_tiny_svg().named_parameters())
    moved = 0.0
    for (name, a), b in zip(model_e.named_parameters(), model_c.parameters()):
        if name not in free:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
            moved = max(moved, float((a - start[name]).detach().abs().max()))
    assert moved > 1e-3                                                      # it trained


@pytest.mark.slow
def test_inductor_step_equals_eager():
    """The real backend (inductor, minutes on a CPU); its RNG falls back to eager's for the comparison."""
    torch._dynamo.reset()
    torch._inductor.config.fallback_random = True
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(2, 4, 3, 64, 64, generator=g) for _ in range(3)]
    model_e = _tiny_svg()
    model_c = copy.deepcopy(model_e)
    # inductor fuses and reorders reductions: measured 6.4e-6 relative L2 on the gradients
    graphs = _check_same(_steps(model_e, model_e, batches), _steps(model_c, compiled.compile_step(model_c), batches),
                         grad_rtol=1e-4)
    assert graphs[1:] == [graphs[0]] * 2, graphs


def test_compile_setting_is_validated_and_auto_is_cuda_only():
    assert compiled.resolve(None, torch.device("cpu")) is False
    assert compiled.resolve(None, torch.device("cuda")) is True
    assert compiled.resolve(True, torch.device("cpu")) is True
    assert compiled.resolve(False, torch.device("cuda")) is False
    with pytest.raises(ValueError, match="train.compile"):
        compiled.resolve("yes", torch.device("cpu"))
    base = {"data": {"name": "shapes"}, "model": {"name": "conv_vae"}, "likelihood": {"name": "optimal_sigma"}}
    assert RunConfig.from_dict(base).train.compile is None
    assert RunConfig.from_dict(apply_overrides(base, ["train.compile=true"])).train.compile is True
    with pytest.raises(ConfigError, match="true or false"):
        RunConfig.from_dict({**base, "train": {"compile": "maybe"}})


SVG_RUN = {"data": {"name": "pusher", "seq_len": 4, "num_test": 4, "num_train": 32, "action_conditioned": True},
           "model": {"name": "svg", "backbone": "dcgan64", "width": 8, "g_dim": 16, "z_dim": 2, "rnn_size": 16,
                     "n_past": 2, "n_future": 2, "n_eval": 2, "action_conditioned": True},
           "likelihood": {"name": "optimal_sigma"}, "train": {"batch_size": 4, "precision": "fp32"}}
IMAGE_RUN = {"data": {"name": "shapes", "image_size": 16, "train_size": 16, "test_size": 8, "val_size": 8},
             "model": {"name": "conv_vae", "base_channels": 8, "latent_dim": 4},
             "likelihood": {"name": "optimal_sigma"},
             "train": {"batch_size": 8}}
U = 2.0 ** -24   # float32 unit roundoff


@pytest.mark.parametrize("base", [IMAGE_RUN, SVG_RUN], ids=["conv_vae", "svg"])
def test_trainer_compiles_when_asked(tmp_path, monkeypatch, base):
    """train.compile=true goes through the compiled step and the whole training step (the
    update guard on the device, fused Adam, the σ-EMA) trains the same as eager.

    Tolerances, from the arithmetic: the compiled graph runs the same per-element kernels and
    may only sum in another order. The −ELBO is a sum of m = B·T·C·H·W pixel terms (and far
    fewer KL terms); torch sums blockwise/pairwise, within ⌈log2 m⌉·u·Σ|t| of the exact sum, so
    two orders differ by at most 2⌈log2 m⌉·u·Σ|t|. Σ|t| ≈ |loss| here (the optimal-σ NLL per
    pixel is dominated by log σ*, one sign for every pixel), hence a relative bound of
    2⌈log2 m⌉·u (2e-6 for the SVG; measured with aot_eager: 0). The gradient norm gets the
    gradients' own tolerance (GRAD_RTOL). The parameters after the steps: Adam's update
    lr·m̂/(√v̂ + ε) is scale-free in the gradient, so a gradient that is rounding only (the
    biases of convolutions followed by BatchNorm, which cannot change the loss) moves in a
    random direction by up to Adam's bound on one step, lr·max(1, (1 − β1)/√(1 − β2))
    (Kingma & Ba §2.1: 3.16·lr for the defaults): those are held to twice that per step
    (two runs, opposite directions; measured 5.9e-3 after 3 steps against 1.9e-2); every
    other parameter within rtol 1e-4 / atol 1e-6 (measured: ≤ 2.1e-7 apart).
    """
    real = compiled.compile_step
    monkeypatch.setattr(compiled, "compile_step", lambda m: real(m, backend="aot_eager"))
    steps = 3
    common = [f"train.steps={steps}", "train.log_every=1", "train.eval_every=0", "train.eval_batches=1",
              "train.image_every=0", "train.checkpoint_every=0", "train.threads=1"]
    runs = {}
    for flag in ("true", "false"):
        torch._dynamo.reset()
        cfg = RunConfig.from_dict(apply_overrides(base, [f"train.out_dir={tmp_path / flag}", f"train.compile={flag}",
                                                         *common]))
        train(cfg, progress=False)
        assert json.loads((tmp_path / flag / "run.json").read_text())["compile"] is (flag == "true")
        lines = [json.loads(x) for x in (tmp_path / flag / "metrics.jsonl").read_text().splitlines()]
        runs[flag] = ([x for x in lines if x["split"] == "train"], load_checkpoint(tmp_path / flag / "checkpoint.pt"))
    (comp, comp_ckpt), (eager, eager_ckpt) = runs["true"], runs["false"]
    assert len(comp) == len(eager) == steps
    spec = build_data(cfg, "train").spec
    m = cfg.train.batch_size * spec.seq_len * spec.frame_dims
    loss_rtol = 2 * math.ceil(math.log2(m)) * U
    for a, b in zip(comp, eager):
        assert abs(a["loss"] - b["loss"]) <= loss_rtol * abs(b["loss"]), (a["step"], a["loss"], b["loss"], loss_rtol)
        assert abs(a["grad_norm"] - b["grad_norm"]) <= GRAD_RTOL * b["grad_norm"], (a["step"], a["grad_norm"],
                                                                                       b["grad_norm"])
        assert a["skipped"] == b["skipped"] == 0
    model = build_model(cfg, spec)
    free = {f"{n}.0.bias" for n, mod in model.named_modules()
            if isinstance(mod, torch.nn.Sequential) and len(mod) > 1 and isinstance(mod[1], torch.nn.BatchNorm2d)}
    tc = cfg.train
    adam_step = tc.lr * max(1.0, (1 - tc.beta1) / math.sqrt(1 - tc.beta2))    # the most one Adam step moves
    for name, _ in model.named_parameters():
        a, b = comp_ckpt["model"][name], eager_ckpt["model"][name]
        if name in free:
            assert float((a - b).abs().max()) <= 2 * steps * adam_step, name
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    assert comp_ckpt["optimizer"]["state"][0]["step"] == eager_ckpt["optimizer"]["state"][0]["step"] == steps
