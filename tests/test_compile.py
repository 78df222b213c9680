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

U = 2.0 ** -24   # float32 unit roundoff


def _tiny_svg():
    torch.manual_seed(0)
    cfg = SVGConfig(backbone="dcgan64", width=8, g_dim=16, z_dim=4, rnn_size=16, n_past=2, n_future=2)
    return build_svg(cfg, OptimalSigmaGaussian(), DataSpec(3, 64, 64, 4, 0))


def loss_rtol(m: int) -> float:
    """Two summation orders of the same m terms (ATen sums blockwise/pairwise, within
    ⌈log2 m⌉·u·Σ|t| of the exact sum) differ by at most 2⌈log2 m⌉·u·Σ|t|; Σ|t| ≈ |loss| here
    (the optimal-σ NLL per pixel is dominated by log σ*, one sign for every pixel)."""
    return 2 * math.ceil(math.log2(m)) * U


def grad_rtol(m: int) -> float:
    """A gradient element is a sum over at most the m pixel terms of the bound (the longest
    sum: σ*² is a mean over all of them), and a sum of m terms in any order is within
    (m − 1)·u·Σ|t| of the exact sum: two runs that differ only in summation order agree per
    tensor within m·u in relative L2 (as for DDP in tests/test_train.py). The kernels may
    differ between the runs (measured on AVX2 kernels: aot_eager's backward 1.6e-4 from a
    float64 gradient where eager is 3e-6), so the bound, not a measurement, is the tolerance."""
    return m * U


def _free_biases(model) -> set[str]:
    """Biases of convolutions followed by BatchNorm: they do not change the output (BN
    subtracts the batch mean), so their gradients are rounding only."""
    return {f"{n}.0.bias" for n, m in model.named_modules()
            if isinstance(m, torch.nn.Sequential) and len(m) > 1 and isinstance(m[1], torch.nn.BatchNorm2d)}


def _check_grads(names, ge, gc, tol, free):
    """Per tensor in relative L2 within ``tol`` (the rounding-only ``free`` biases only in the
    whole vector, where they weigh ≈ 1e-4 of the others, since alone they measure rounding)."""
    whole_e, whole_c = torch.cat([g.flatten() for g in ge]), torch.cat([g.flatten() for g in gc])
    rel = float((whole_e - whole_c).norm() / whole_e.norm())
    print(f"gradient relative L2 difference {rel:.2e} (bound {tol:.2e})")
    assert rel <= tol, rel
    for name, a, b in zip(names, ge, gc):
        if name not in free:
            err = float((a - b).norm() / a.norm().clamp(min=1e-30))
            assert err <= tol, f"{name}: relative L2 difference {err:.2e} > {tol:.2e}"


def _lockstep(model_e, model_c, fn_c, batches, loss_tol, lr=1e-3):
    """Adam steps of the eager model; before each, the compiled model takes the eager one's
    state (parameters, BatchNorm statistics, σ-EMA), so both compute the same step from the
    same weights and only rounding can separate them. (Run apart, the two would drift:
    Adam's first steps move every weight by ±lr whatever the size of its gradient, so a
    gradient that is rounding-sized in one run and of the other sign in the other moves
    2·lr apart, and the losses after it differ by far more than rounding.)

    Per step: the −ELBO within ``loss_tol`` (relative), the σ-EMA after ``commit_step``
    within the same (a mean of m squares), the gradients within :func:`grad_rtol`.
    Returns dynamo's graph count after each step."""
    opt = torch.optim.Adam(model_e.parameters(), lr=lr)
    names = [n for n, _ in model_e.named_parameters()]
    free, graphs = _free_biases(model_e), []
    for i, x in enumerate(batches):
        model_c.load_state_dict(model_e.state_dict())   # in place: the same tensors, so no recompilation
        seen = []
        for model, fn in ((model_e, model_e), (model_c, fn_c)):
            torch.manual_seed(100 + i)                  # the same posterior noise in both
            out = fn({"frames": x})
            out.loss.backward()
            model.commit_step(True)
            seen.append((float(out.loss.detach()), [p.grad.clone() for p in model.parameters()],
                         model.likelihood.ema_sigma2.clone()))
        graphs.append(compiled.graph_count())
        (le, ge, ema_e), (lc, gc, ema_c) = seen
        assert abs(lc - le) <= loss_tol * abs(le), (i, le, lc, loss_tol)
        torch.testing.assert_close(ema_c, ema_e, rtol=loss_tol, atol=0)
        _check_grads(names, ge, gc, grad_rtol(x.numel()), free)
        opt.step()
        opt.zero_grad(set_to_none=True)
        model_c.zero_grad(set_to_none=True)
    return graphs


def test_compiled_step_equals_eager_and_never_recompiles():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(2, 4, 3, 64, 64, generator=g) for _ in range(5)]
    model_e = _tiny_svg()
    model_c = copy.deepcopy(model_e)
    before = compiled.graph_count()
    graphs = _lockstep(model_e, model_c, compiled.compile_step(model_c, backend="aot_eager"), batches,
                       loss_rtol(batches[0].numel()))
    assert graphs[0] == before + 1                   # it compiled, to ONE graph (the LSTMs inside it)
    assert graphs[1:] == [graphs[0]] * 4, graphs    # steps 2..5 (new weights, new values): no recompilation
    assert len(_free_biases(model_e)) >= 8
    start = dict(_tiny_svg().named_parameters())
    moved = max(float((p - start[n]).detach().abs().max()) for n, p in model_e.named_parameters())
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
    # inductor fuses and reorders reductions (e.g. one running sum per vector lane): the loss
    # gets the any-order bound of a sum of m terms, (m − 1)·u·Σ|t| (measured 6.4e-6 relative
    # L2 on the gradients)
    graphs = _lockstep(model_e, model_c, compiled.compile_step(model_c), batches, batches[0].numel() * U)
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
             "train": {"batch_size": 8, "precision": "fp32"}}   # what is compared is compile, not bf16


@pytest.mark.parametrize("base", [IMAGE_RUN, SVG_RUN], ids=["conv_vae", "svg"])
def test_trainer_compiles_when_asked(tmp_path, monkeypatch, base):
    """train.compile=true goes through the compiled step and the whole training step (the
    update guard on the device, fused Adam, the σ-EMA) does what the eager one does.

    One step from the same weights: run apart for several steps, two runs drift as soon as
    Adam has moved by ±lr a weight whose gradient is rounding-sized (it happened on AVX2
    kernels: the losses of step 2 3e-5 apart); several steps are compared in lockstep above.

    Tolerances, from the arithmetic (:func:`loss_rtol`, :func:`grad_rtol`; m = B·T·C·H·W
    pixel terms): the −ELBO within 2⌈log2 m⌉·u (2e-6 for the SVG; measured with aot_eager:
    0); the σ-EMA (a mean of m squares) the same; the gradient, read back from Adam's first
    moment (m₁ = (1 − β1)·g after one step), per tensor within m·u, and so its norm; the
    weights exactly where Adam's first step puts them for each run's own gradient,
    −lr·g/(|g| + ε) (bias-corrected m̂ = g, √v̂ = |g|), up to a few roundings of the fused
    kernel. (A weight whose gradient is rounding only, such as the bias of a convolution
    followed by BatchNorm, which cannot change the loss, may so move by ±lr in either run.)
    """
    real = compiled.compile_step
    monkeypatch.setattr(compiled, "compile_step", lambda m: real(m, backend="aot_eager"))
    common = ["train.steps=1", "train.log_every=1", "train.eval_every=0", "train.eval_batches=1",
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
    ((a,), comp), ((b,), eager) = runs["true"], runs["false"]
    spec = build_data(cfg, "train").spec
    m = cfg.train.batch_size * spec.seq_len * spec.frame_dims
    assert abs(a["loss"] - b["loss"]) <= loss_rtol(m) * abs(b["loss"]), (a["loss"], b["loss"], loss_rtol(m))
    assert abs(a["grad_norm"] - b["grad_norm"]) <= grad_rtol(m) * b["grad_norm"], (a["grad_norm"], b["grad_norm"])
    assert a["skipped"] == b["skipped"] == 0
    torch.testing.assert_close(comp["model"]["likelihood.ema_sigma2"], eager["model"]["likelihood.ema_sigma2"],
                               rtol=loss_rtol(m), atol=0)
    tc = cfg.train
    model = build_model(cfg, spec)
    names = [n for n, _ in model.named_parameters()]                      # the optimizer's parameter order
    grads = {run: [ckpt["optimizer"]["state"][i]["exp_avg"] / (1 - tc.beta1) for i in range(len(names))]
             for run, ckpt in (("comp", comp), ("eager", eager))}
    _check_grads(names, grads["eager"], grads["comp"], grad_rtol(m), _free_biases(model))
    eps = 1e-8                                                            # torch.optim.Adam's default
    for i, name in enumerate(names):   # θ = θ₀ − lr·g/(|g| + ε) in each run, from the same θ₀
        first = {run: tc.lr * g / (g.abs() + eps) for run, g in ((r, grads[r][i]) for r in grads)}
        a_w, b_w = comp["model"][name], eager["model"][name]
        slack = 8 * U * (b_w.abs() + tc.lr)                               # the fused kernel's and m₁'s roundings
        assert ((a_w + first["comp"]) - (b_w + first["eager"])).abs().le(slack).all(), name
    assert comp["optimizer"]["state"][0]["step"] == eager["optimizer"]["state"][0]["step"] == 1
