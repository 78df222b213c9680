"""SVG: stochastic video generation with a learned prior (Denton & Fergus 2018), with a
swappable calibrated decoder (the σ-VAE paper, §3–4; SVG-LP on BAIR in §5).

Per predicted frame t (SVG §3, Eq. 1–4; the σ-VAE uses β = 1):

    h_{t-1} = E(x_{t-1})                          frame encoder (dcgan64 / vgg64)
    z_t     ~ q(z_t | x_{1:t})  = N(μ_φ, σ_φ)      posterior LSTM fed E(x_t)       (training)
    p(z_t | x_{1:t-1}) = N(μ_ψ, σ_ψ)               learned-prior LSTM fed h_{t-1}   (SVG-LP)
    g_t     = f(h_{t-1}, z_t [, a_{t-1}])         frame-predictor LSTM
    x̂_t    ~ head(D(g_t, skips))                  decoder with skips from the last context frame

    −ELBO = Σ_{t=1}^{T-1} [ −log p(x_t | ·) + KL(q(z_t | x_{1:t}) ‖ p(z_t | x_{1:t-1})) ]

``prior="fixed"`` is SVG-FP (p = N(0, I)); ``prior="none"`` is the deterministic model
(no latent, KL = 0). With ``action_conditioned`` the action a_{t-1} (which moves frame
t−1 to frame t) is fed to the predictor, prior and posterior.

How the computation is laid out (the same function as the original, less work): see :class:`SVG`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from seqvae.data.spec import DataSpec
from seqvae.likelihoods.base import LikelihoodHead
from seqvae.models.base import SequenceVAE
from seqvae.models.output import ELBO, gaussian_kl
from seqvae.nets.dcgan64 import DCGANDecoder64, DCGANEncoder64
from seqvae.nets.lstm import LSTM, GaussianLSTM, LSTMState
from seqvae.nets.vgg64 import VGGDecoder64, VGGEncoder64
from seqvae.registry import MODELS, ComponentConfig, require_at_least

BACKBONES: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "dcgan64": (DCGANEncoder64, DCGANDecoder64),
    "vgg64": (VGGEncoder64, VGGDecoder64),
}
PRIORS = ("learned", "fixed", "none")
SKIPS = ("last_context", "last_frame")


@dataclass
class SVGConfig(ComponentConfig):
    """SVG hyper-parameters; the defaults are the original BAIR SVG-LP settings."""

    name: str = "svg"
    backbone: str = "vgg64"            # dcgan64 | vgg64
    width: int = 64                    # channels of the backbone's first block (doubling per block); 64 is the original
    g_dim: int = 128                   # frame code size (encoder output, predictor output)
    z_dim: int = 64                    # latent size per frame
    rnn_size: int = 256                # hidden units of every LSTM
    predictor_layers: int = 2
    prior_layers: int = 1
    posterior_layers: int = 1
    n_past: int = 2                    # context frames
    n_future: int = 10                 # predicted frames in training (sequences of n_past + n_future)
    n_eval: int = 28                   # predicted frames at evaluation
    prior: str = "learned"             # learned (SVG-LP) | fixed (SVG-FP, N(0, I)) | none (deterministic)
    action_conditioned: bool = False   # feed a_{t-1} to predictor, prior and posterior
    skip: str = "last_context"         # last_context (SVG) | last_frame (most recent frame's skips)

    def __post_init__(self) -> None:
        """Every check of these settings (the model checks only what needs the data spec)."""
        require_at_least(self, "model", 1, "width", "g_dim", "z_dim", "rnn_size", "predictor_layers", "prior_layers",
                         "posterior_layers", "n_past", "n_future", "n_eval")
        if self.backbone not in BACKBONES:
            raise ValueError(f"model.backbone must be one of {', '.join(sorted(BACKBONES))}, got {self.backbone!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"model.prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")
        if self.skip not in SKIPS:
            raise ValueError(f"model.skip must be one of {', '.join(SKIPS)}, got {self.skip!r}")


@dataclass
class SVGState:
    """Recurrent state of the three LSTMs; ``None`` for the ones a variant does not have."""

    predictor: LSTMState
    prior: LSTMState | None = None
    posterior: LSTMState | None = None


@dataclass
class StepState:
    """Where a frame-by-frame rollout stands (:meth:`SVG.begin`, :meth:`SVG.step`): the LSTM
    state after the frames seen so far, the code of the latest frame (true or predicted) and
    the decoder's skip terms (of the last true frame; of the latest frame with
    ``skip="last_frame"``)."""

    rnn: SVGState
    h_prev: Tensor                   # [B, 1, g_dim]
    terms: list[Tensor]

    def take(self, rows: Tensor) -> StepState:
        """The state of rollouts ``rows`` (long ``[n]``; a row may be taken many times), e.g. one
        context's state handed to every candidate that starts from it."""
        def lstm(state: LSTMState | None) -> LSTMState | None:   # [layers, B, hidden]: rows are dim 1
            return None if state is None else (state[0][:, rows], state[1][:, rows])

        rnn = SVGState(predictor=lstm(self.rnn.predictor), prior=lstm(self.rnn.prior),
                       posterior=lstm(self.rnn.posterior))
        return StepState(rnn=rnn, h_prev=self.h_prev[rows], terms=[t[rows] for t in self.terms])


@dataclass
class Transition:
    """Output of :meth:`SVG.transition` over ``S`` steps (float32 latents)."""

    g: Tensor                        # [B, S, g_dim] predicted frame codes
    z: Tensor | None                 # [B, S, z_dim] latents used (None: deterministic)
    mu_q: Tensor | None = None       # posterior, [B, S, z_dim] (when h_next was given)
    logvar_q: Tensor | None = None
    mu_p: Tensor | None = None       # learned prior, [B, S, z_dim]
    logvar_p: Tensor | None = None


class SVG(SequenceVAE):
    """SVG-LP / SVG-FP / deterministic video predictor with a likelihood head.

    How the computation is laid out (the same function as the original code, less work):

    * In training every LSTM input is known in advance (teacher forcing: h_{t-1} and h_t are
      encodings of true frames and z_t comes from the posterior, which sees only h_t), so all
      frames are encoded in ONE encoder call over ``(b t)`` (the original encodes each frame
      twice, one call per frame), each LSTM runs once over the whole sequence, and all
      predicted frames are decoded in ONE decoder call after the recurrence.
    * A skip map shared by many decoded frames is convolved once
      (:func:`seqvae.nets.vgg64.conv_cat`).
    * BatchNorm in training therefore sees statistics over all ``B·T`` frames of the batch
      instead of the original's ``B`` frames of one time step; at evaluation (running
      statistics) the two are the same function.
    * Skips for frame t come from frame t−1 up to the last context frame, then from the last
      context frame (``skip="last_context"``), as the SVG paper states. The original code
      updates the skips only while ``i < n_past`` and so uses frame ``n_past − 2`` (the first
      frame for BAIR's n_past = 2); the paper's rule is kept here.
    * Generation encodes the context in one call, then per predicted frame runs one decoder
      call and one encoder call on that frame (SVG feeds the encoding of the previous
      *generated* frame back), which is inherent to the model.

    Recurrent state is explicit (:class:`SVGState`), noise comes from an explicit
    ``torch.Generator``; likelihoods and KLs are float32 under autocast.
    """

    def __init__(self, cfg: SVGConfig, head: LikelihoodHead, spec: DataSpec) -> None:
        """Build the model ``cfg`` describes for frames of ``spec`` (64×64; actions of
        ``spec.action_dim`` when ``cfg.action_conditioned``) with likelihood ``head``: the
        decoder emits ``head.num_params(C)`` channels. ``cfg`` is checked by its own
        ``__post_init__``; only what needs the data spec is checked here."""
        super().__init__()
        if (spec.height, spec.width) != (64, 64):
            raise ValueError(f"model 'svg' ({cfg.backbone}) needs 64×64 frames, the data are "
                             f"{spec.height}×{spec.width}: resize the data set to 64×64")
        if cfg.action_conditioned and spec.action_dim == 0:
            raise ValueError("model.action_conditioned=true but the data set has no actions (action_dim 0)")
        self.cfg = cfg
        self.spec = spec  # frame shape (and actions) the model was built for; checked against the data
        # what rollouts, evaluation and planning read (VideoPredictor), derived from cfg and spec
        self.channels, self.g_dim, self.rnn_size = spec.channels, cfg.g_dim, cfg.rnn_size
        self.z_dim = cfg.z_dim if cfg.prior != "none" else 0
        self.n_past, self.n_future, self.n_eval = cfg.n_past, cfg.n_future, cfg.n_eval
        self.prior_kind, self.skip = cfg.prior, cfg.skip
        self.action_dim = spec.action_dim if cfg.action_conditioned else 0
        encoder_cls, decoder_cls = BACKBONES[cfg.backbone]
        self.encoder = encoder_cls(cfg.g_dim, spec.channels, nf=cfg.width)
        self.decoder = decoder_cls(cfg.g_dim, head.num_params(spec.channels), nf=cfg.width)
        self.likelihood = head
        g, z, a, rnn = cfg.g_dim, self.z_dim, self.action_dim, cfg.rnn_size
        self.predictor = LSTM(g + z + a, g, rnn, cfg.predictor_layers)
        self.posterior = GaussianLSTM(g + a, cfg.z_dim, rnn, cfg.posterior_layers) if cfg.prior != "none" else None
        self.prior = GaussianLSTM(g + a, cfg.z_dim, rnn, cfg.prior_layers) if cfg.prior == "learned" else None

    # ------------------------------------------------------------------ pieces
    def init_state(self, batch_size: int, device: torch.device | str, dtype: torch.dtype = torch.float32) -> SVGState:
        """Zero state for a new sequence (SVG resets the LSTMs at every sequence)."""
        return SVGState(
            predictor=self.predictor.init_state(batch_size, device, dtype),
            prior=self.prior.init_state(batch_size, device, dtype) if self.prior is not None else None,
            posterior=self.posterior.init_state(batch_size, device, dtype) if self.posterior is not None else None,
        )

    def encode(self, frames: Tensor) -> tuple[Tensor, list[Tensor]]:
        """All frames in one encoder call: ``[B, T, C, H, W] -> (h[B, T, g], skips [B, T, c, s, s])``."""
        b = frames.shape[0]
        h, skips = self.encoder(rearrange(frames, "b t c h w -> (b t) c h w"))
        return (rearrange(h, "(b t) g -> b t g", b=b),
                [rearrange(s, "(b t) c h w -> b t c h w", b=b) for s in skips])

    def rollout_row_bytes(self, horizon: int, keep_frames: bool) -> int:
        """Rough working memory of one rollout row in bytes (float32 activations), what
        :func:`seqvae.control.rollout.rollout` sizes its chunks by: the skip feature maps of a
        frame, as many again for a decoder step plus transients, the frame itself, and the
        predicted frames when they are kept."""
        frame = self.spec.channels * self.spec.height * self.spec.width
        per_row = 8 * max(self.encoder.skip_features, 4 * frame) + 4 * frame
        if keep_frames:
            per_row += horizon * frame
        return 4 * per_row

    def decode(self, g: Tensor, skips: list[Tensor], skip_pos: Sequence[int] | None) -> Tensor:
        """All steps in one decoder call: ``g[B, S, g_dim]``, ``skips[B, K, ...]`` and
        ``skip_pos`` (the skip frame, 0..K−1, of each of the S steps; None: K = S, step s
        uses frame s) -> ``params[B, S, P, H, W]``.

        The skip convolutions run on the ``B·K`` distinct skip maps only.
        """
        b = g.shape[0]
        terms = self.decoder.skip_terms([rearrange(x, "b k c h w -> (b k) c h w") for x in skips])
        params = self.decoder(rearrange(g, "b s g -> (b s) g"), terms, skip_pos)
        return rearrange(params, "(b s) p h w -> b s p h w", b=b)

    def transition(self, h_prev: Tensor, state: SVGState, *, h_next: Tensor | None = None,
                   actions: Tensor | None = None, generator: torch.Generator | None = None,
                   noise: Tensor | None = None) -> tuple[Transition, SVGState]:
        """Run prior, posterior and predictor over ``S`` steps.

        Args:
            h_prev: ``[B, S, g]`` codes of frames t−1 (fed to prior and predictor).
            state: the recurrent state before these steps.
            h_next: ``[B, S, g]`` codes of the true frames t: z_t is drawn from the
                posterior (training, context warm-up); None: from the prior.
            actions: ``[B, S, A]`` actions a_{t−1} (only for action-conditioned models).
            generator: source of the noise ε ``[B, S, z_dim]``, drawn in one call (None:
                the global RNG).
            noise: the noise ε ``[B, S, z_dim]`` itself (overrides ``generator``).
        Returns:
            the step outputs and the state after them.
        """
        b, s = h_prev.shape[:2]
        h_prev = h_prev.float()
        cond = [actions.float()] if self.action_dim else []
        mu_p = logvar_p = mu_q = logvar_q = z = None
        prior_state, post_state = state.prior, state.posterior
        if self.prior is not None:                                   # p(z_t | x_{1:t-1})
            mu_p, logvar_p, prior_state = self.prior(torch.cat([h_prev, *cond], -1), state.prior)
        if self.posterior is not None and h_next is not None:        # q(z_t | x_{1:t})
            mu_q, logvar_q, post_state = self.posterior(torch.cat([h_next.float(), *cond], -1), state.posterior)
        if self.z_dim:
            # drawn on the generator's device, so a CPU generator reproduces on any device
            if noise is not None:
                eps = noise.to(h_prev.device, torch.float32)
            else:
                eps = torch.randn(b, s, self.z_dim, generator=generator,
                                  device=generator.device if generator is not None else h_prev.device).to(h_prev.device)
            if mu_q is not None:
                z = mu_q + torch.exp(0.5 * logvar_q) * eps
            elif mu_p is not None:
                z = mu_p + torch.exp(0.5 * logvar_p) * eps
            else:                                                    # SVG-FP: N(0, I)
                z = eps
        inputs = [h_prev] + ([z] if z is not None else []) + cond
        g, pred_state = self.predictor(torch.cat(inputs, -1), state.predictor)
        return (Transition(g=g, z=z, mu_q=mu_q, logvar_q=logvar_q, mu_p=mu_p, logvar_p=logvar_p),
                SVGState(predictor=pred_state, prior=prior_state, posterior=post_state))

    def kl(self, out: Transition) -> Tensor:
        """KL(q ‖ p) per step, summed over latent dims, float32: ``[B, S]``."""
        if self.z_dim == 0:
            return out.g.new_zeros(out.g.shape[:2], dtype=torch.float32)
        if out.mu_q is None:
            raise ValueError("the KL needs the posterior: call transition with h_next")
        return gaussian_kl(out.mu_q, out.logvar_q, out.mu_p, out.logvar_p).sum(-1)

    def skip_positions(self, num_steps: int, n_context: int) -> list[int] | None:
        """Skip frame of each of the steps predicting frames 1..num_steps (teacher forcing):
        frame t−1 up to the last context frame, then the last context frame (SVG's rule as
        the paper states it), or None (frame t−1 always) with ``skip="last_frame"``."""
        if self.skip == "last_frame":
            return None
        return [min(t, n_context - 1) for t in range(num_steps)]

    # ---------------------------------------------------------------- training
    def _actions(self, actions: Tensor | None, needed: int, batch_size: int) -> Tensor | None:
        """``a_{t-1}`` for ``needed`` steps, or None for a model without actions."""
        if not self.action_dim:
            return None
        if actions is None:
            raise ValueError("this SVG model is action-conditioned: the batch needs 'actions' [B, T, A]")
        if actions.dim() != 3 or actions.shape[0] != batch_size or actions.shape[1] < needed \
                or actions.shape[2] != self.action_dim:
            raise ValueError(f"expected actions [{batch_size}, >= {needed}, {self.action_dim}], "
                             f"got {tuple(actions.shape)}")
        return actions[:, :needed]

    def teacher_forced(self, batch: dict[str, Tensor],
                       generator: torch.Generator | None = None) -> tuple[Tensor, Transition]:
        """Posterior pass over a batch (true frames fed back, z_t from q): decoder
        ``params[B, T-1, P, H, W]`` of frames 1..T−1 and the transition over those steps."""
        x = batch["frames"]
        if x.dim() != 5 or x.shape[1] < 2:
            raise ValueError(f"SVG needs frames [B, T >= 2, C, H, W], got {tuple(x.shape)}")
        b, t = x.shape[:2]
        actions = self._actions(batch.get("actions"), t - 1, b)
        h, skips = self.encode(x)                                                  # [B, T, g], one call
        out, _ = self.transition(h[:, :-1], self.init_state(b, x.device), h_next=h[:, 1:],
                                 actions=actions, generator=generator)             # [B, T-1, ·]
        pos = self.skip_positions(t - 1, self.n_past)
        k = t - 1 if pos is None else max(pos) + 1                                 # skip frames used
        params = self.decode(out.g, [s[:, :k] for s in skips], pos)                # [B, T-1, P, H, W], one call
        return params, out

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> ELBO:
        """−ELBO terms of frames 1..T−1 given frame 0: ``nll, kl [B, T-1]``.

        ``generator`` supplies the posterior noise ε ``[B, T-1, z_dim]`` (one draw).
        """
        x = batch["frames"]
        params, out = self.teacher_forced(batch, generator)
        b, t, c, hh, ww = x.shape
        nll = self.likelihood.nll(rearrange(params, "b s p h w -> (b s) p h w"),
                                  rearrange(x[:, 1:], "b s c h w -> (b s) c h w"))
        return ELBO(nll=rearrange(nll, "(b s) -> b s", b=b), kl=self.kl(out),
                    dims=(t - 1) * c * hh * ww, valid_bound=self.likelihood.valid_bound)

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """Frame 0 copied, frames 1..T−1 decoded from posterior samples: ``[B, T, C, H, W]``."""
        x = batch["frames"]
        params, _ = self.teacher_forced(batch, generator)
        mean = self.likelihood.mean(rearrange(params, "b s p h w -> (b s) p h w"))
        return torch.cat([x[:, :1].float(), rearrange(mean, "(b s) c h w -> b s c h w", b=x.shape[0])], 1)

    # -------------------------------------------------------------- generation
    @torch.no_grad()
    def predict(self, context: Tensor, n_future: int, actions: Tensor | None = None,
                generator: torch.Generator | None = None, sample_pixels: bool = False,
                noise: Tensor | None = None) -> Tensor:
        """Roll the model forward from ``context[B, n_ctx, C, H, W]``: ``[B, n_future, C, H, W]``.

        The LSTMs are warmed up on the context with posterior latents (as SVG does), then
        each new z_t comes from the prior (learned, or N(0, I) for SVG-FP) and each frame
        is the head's mean (a pixel sample if ``sample_pixels``) fed back to the encoder.
        ``actions[B, >= n_ctx + n_future - 1, A]`` (a_t moves frame t to t+1) are used only
        by action-conditioned models. All randomness comes from ``generator``, or, for the
        latents, from ``noise[B, n_ctx - 1 + n_future, z_dim]`` when given: each row's
        rollout then depends on its own noise only, whatever else is in the batch (what
        :mod:`seqvae.control.rollout` uses to make chunked and batched rollouts equal).
        """
        b, n_ctx = context.shape[:2]
        if context.dim() != 5 or n_ctx < 1:
            raise ValueError(f"context must be [B, n_ctx >= 1, C, H, W], got {tuple(context.shape)}")
        if n_future <= 0:
            return context.new_zeros((b, 0, *context.shape[2:]), dtype=torch.float32)
        actions = self._actions(actions, n_ctx + n_future - 1, b)
        start = self.begin(context, None if actions is None else actions[:, : n_ctx - 1], generator,
                           None if noise is None else noise[:, : n_ctx - 1])
        return self.dream(start, n_future, None if actions is None else actions[:, n_ctx - 1 :], generator,
                          sample_pixels, None if noise is None else noise[:, n_ctx - 1 :])

    @torch.no_grad()
    def dream(self, state: StepState, n_future: int, actions: Tensor | None = None,
              generator: torch.Generator | None = None, sample_pixels: bool = False,
              noise: Tensor | None = None) -> Tensor:
        """:meth:`predict`'s loop from a state of :meth:`begin` (or :meth:`step`): ``n_future``
        frames ``[B, n_future, C, H, W]``, each fed back as the next input; ``actions[B, >=
        n_future, A]`` (``actions[:, k]`` moves the latest frame to predicted frame ``k``),
        ``noise[B, >= n_future, z_dim]`` replaces ``generator``'s draws. ``predict(context, ...)``
        is ``dream(begin(context, ...), ...)``; a planner whose candidates share a context
        begins once and dreams from :meth:`StepState.take` copies of that state."""
        b = state.h_prev.shape[0]
        actions = self._actions(actions, n_future, b)
        frames = []
        for k in range(n_future):
            a = None if actions is None else actions[:, k : k + 1]
            step_noise = None if noise is None else noise[:, k : k + 1]
            frame, rnn = self._next_frame(state, a, generator, step_noise, sample_pixels)
            frames.append(frame)
            if k + 1 < n_future:
                state = self._fed_back(frame, rnn, state.terms)
        return torch.stack(frames, 1)

    def _next_frame(self, state: StepState, action: Tensor | None, generator: torch.Generator | None,
                    noise: Tensor | None, sample_pixels: bool = False) -> tuple[Tensor, SVGState]:
        """One prior transition and one decoder call: the next frame ``[B, C, H, W]`` (the head's
        mean, or a pixel sample) and the LSTM state after it."""
        out, rnn = self.transition(state.h_prev, state.rnn, actions=action, generator=generator, noise=noise)
        params = self.decoder(rearrange(out.g, "b 1 g -> b g"), state.terms)        # [B, P, H, W]
        frame = self.likelihood.sample(params, generator) if sample_pixels else self.likelihood.mean(params)
        return frame, rnn

    def _fed_back(self, frame: Tensor, rnn: SVGState, terms: list[Tensor]) -> StepState:
        """The state that goes on from a generated ``frame``: its code (and, with
        ``skip="last_frame"``, its skips) as the latest frame."""
        h_new, new_skips = self.encoder(frame)
        terms = self.decoder.skip_terms(new_skips) if self.skip == "last_frame" else terms
        return StepState(rnn=rnn, h_prev=rearrange(h_new, "b g -> b 1 g"), terms=terms)

    # ------------------------------------------------------- frame by frame
    @torch.no_grad()
    def begin(self, context: Tensor, actions: Tensor | None = None, generator: torch.Generator | None = None,
              noise: Tensor | None = None) -> StepState:
        """Start a frame-by-frame rollout from ``context[B, n_ctx, C, H, W]``: the warm-up of
        :meth:`predict` (posterior latents on the context; ``actions[B, >= n_ctx - 1, A]``,
        ``noise[B, n_ctx - 1, z_dim]``), returned as a state for :meth:`step`."""
        b, n_ctx = context.shape[:2]
        if context.dim() != 5 or n_ctx < 1:
            raise ValueError(f"context must be [B, n_ctx >= 1, C, H, W], got {tuple(context.shape)}")
        actions = self._actions(actions, n_ctx - 1, b) if n_ctx > 1 else None
        h, skips = self.encode(context)
        state = self.init_state(b, context.device)
        if n_ctx > 1:
            _, state = self.transition(h[:, :-1], state, h_next=h[:, 1:], actions=actions, generator=generator,
                                       noise=noise)
        return StepState(rnn=state, h_prev=h[:, -1:], terms=self.decoder.skip_terms([s[:, -1] for s in skips]))

    @torch.no_grad()
    def step(self, state: StepState, action: Tensor | None = None, observed: Tensor | None = None,
             generator: torch.Generator | None = None, noise: Tensor | None = None) -> tuple[Tensor, StepState]:
        """Predict the next frame, ``[B, C, H, W]`` (the head's mean), and return the state to go on from.

        One prior transition and one decoder call per frame, the recurrent state kept (what
        a live view needs: the context is never run again). ``action[B, A]`` moves the
        latest frame to the next (action-conditioned models); ``noise[B, z_dim]`` replaces
        ``generator``'s draw. The state returned goes on from

        * the prediction itself when ``observed`` is None ("dreaming": successive calls are
          :meth:`predict`'s loop, frame for frame, given the same noise), or
        * the true next frame ``observed[B, C, H, W]``: the model takes it in as one more
          context frame (its posterior latent, its skips), so successive calls predict one
          frame ahead of the truth as :meth:`predict` would from the whole history.
        """
        a = None if not self.action_dim else self._actions(action[:, None] if action is not None else None, 1,
                                                            state.h_prev.shape[0])
        step_noise = None if noise is None else noise.reshape(noise.shape[0], 1, -1)
        frame, rnn = self._next_frame(state, a, generator, step_noise)
        if observed is None:
            return frame, self._fed_back(frame, rnn, state.terms)
        h_true, true_skips = self.encoder(observed.float())
        h_true = rearrange(h_true, "b g -> b 1 g")
        _, rnn = self.transition(state.h_prev, state.rnn, h_next=h_true, actions=a, generator=generator,
                                 noise=step_noise)
        return frame, StepState(rnn=rnn, h_prev=h_true, terms=self.decoder.skip_terms(true_skips))

    @torch.no_grad()
    def generate(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """The first ``n_past`` frames copied from the batch, the rest predicted: ``[B, T, C, H, W]``."""
        x = batch["frames"]
        n = min(self.n_past, x.shape[1])
        pred = self.predict(x[:, :n], x.shape[1] - n, batch.get("actions"), generator)
        return torch.cat([x[:, :n].float(), pred], 1)


@MODELS.register("svg", SVGConfig)
def build_svg(cfg: SVGConfig, head: LikelihoodHead, spec: DataSpec) -> SVG:
    """The registered factory: :class:`SVG` for 64×64 frames of ``spec``."""
    return SVG(cfg, head, spec)
