"""Which updates the training loop applies, and the statistics that keep skipping loud.

The loss is summed over every pixel (paper §3.1), so the global gradient norm grows with
image size and sequence length: an absolute skip threshold that suits 28×28 digits skips
every update on 32×32 colour images. :class:`UpdateGuard` therefore judges a step's
gradient norm *relative to recent history* (in the spirit of vdvae's skipped updates):

* a non-finite norm (NaN/Inf loss or gradients) is always skipped;
* after ``warmup`` accepted updates, a norm above ``skip_factor × median`` of the last
  ``window`` accepted norms is a spike and is skipped (``skip_factor = 0``: off);
* optionally, a norm above the absolute ``abs_limit`` is skipped (``0``: off);
* ``max_consecutive`` skips in a row stop the run with :class:`UpdatesSkippedError`
  (``0``: never) — a run never burns its budget skipping silently.

Clipping (``clip``) is applied by the loop; the guard counts how often it bites. Per log
window it reports ``skipped``, ``skipped_frac``, ``clipped_frac`` and the running median;
it warns once when more than ``WARN_SKIP_FRACTION`` of the updates after warm-up were
skipped, and once when most updates of a log window were clipped.

Every rank sees the same (all-reduced) gradients, hence the same norm and decisions.

Two ways to ask, one rule:

* :meth:`UpdateGuard.check` takes the norm as a host number and answers at once (the
  reference; what the unit tests drive);
* :meth:`UpdateGuard.decide` takes the norm as a tensor and answers with a 0-dim bool
  tensor on its device (True: skip), never reading a value on the host, so that a GPU step
  does not wait for its own kernels (issue 27). The history of accepted norms, the
  accepted and in-a-row counts live on that device too (the median is taken there, with
  :func:`statistics.median`'s rule for an even count), and every decision is recorded in a
  small device buffer. :meth:`sync` reads that buffer once and replays it into the host
  bookkeeping above (counts, streak, warnings), exactly as :meth:`check` would have kept
  it; the trainer syncs at log, checkpoint and last steps, and the guard itself when its
  buffer of :data:`RECORD_CAP` decisions is full. Until a sync the host does not know of a
  stall; the device does: once ``max_consecutive`` updates in a row were skipped it skips
  every later one as well (reason ``"stalled"``, not counted), so nothing changes between
  the stall and the sync that stops the run, and the stop reports the same streak.
"""
from __future__ import annotations

import math
import statistics
import warnings
from collections import deque
from typing import Any

import torch

WARN_SKIP_FRACTION = 0.05   # warn once when more than this share of post-warm-up updates were skipped …
WARN_MIN_STEPS = 20         # … judged over at least this many steps
WARN_CLIP_FRACTION = 0.5    # warn once when more than this share of a log window's updates were clipped
RECORD_CAP = 256            # device-side decisions kept between two syncs (then decide() syncs itself)
REASONS = (None, "non-finite", "abs", "spike", "stalled")   # the device's reason codes 0..4


class UpdatesSkippedError(RuntimeError):
    """Too many updates in a row were skipped; training stopped (the last checkpoint is untouched)."""


def _fmt(norm: float) -> str:
    return f"{norm:.4g}"


class UpdateGuard:
    """Accept or skip each update from its gradient norm; keep the skip/clip statistics."""

    def __init__(self, skip_factor: float = 10.0, warmup: int = 50, window: int = 100, abs_limit: float = 0.0,
                 clip: float = 0.0, max_consecutive: int = 50, warn: bool = True) -> None:
        if skip_factor < 0 or abs_limit < 0 or clip < 0 or max_consecutive < 0 or warmup < 0:
            raise ValueError("skip_factor, abs_limit, clip, max_consecutive and warmup must be >= 0")
        if skip_factor and (skip_factor <= 1 or window < 1):
            raise ValueError(f"skip_factor must be 0 (off) or > 1 with window >= 1, got {skip_factor}, {window}")
        self.skip_factor, self.warmup, self.abs_limit, self.clip = skip_factor, warmup, abs_limit, clip
        self.max_consecutive, self.warn = max_consecutive, warn
        self.history: deque[float] = deque(maxlen=max(window, 1))   # recent accepted (pre-clip) norms
        self.accepted = 0              # accepted updates so far (this run, across resumes)
        self.late_steps = 0            # steps taken after warm-up …
        self.late_skipped = 0          # … and how many of them were skipped
        self.consecutive = 0           # skips in a row up to now
        self.streak: dict[str, Any] = {}   # the current run of skips: first step, norms seen, reasons
        self._window = {"steps": 0, "skipped": 0, "clipped": 0}
        self._warned_skips = self._warned_clips = False
        self._device: _DeviceState | None = None   # decide()'s state, made from the host state when first needed
        self._pending: list[int] = []               # steps decided on the device since the last sync

    @classmethod
    def from_config(cls, tc, warn: bool = True) -> "UpdateGuard":
        """From :class:`seqvae.config.TrainConfig` (``skip_*``, ``grad_clip``, ``max_consecutive_skips``)."""
        return cls(tc.skip_grad_factor, tc.skip_warmup, tc.skip_window, tc.skip_grad_norm_abs, tc.grad_clip,
                   tc.max_consecutive_skips, warn)

    # ------------------------------------------------------------------ deciding
    @property
    def warmed_up(self) -> bool:
        return self.accepted >= self.warmup

    def median(self) -> float:
        return statistics.median(self.history) if self.history else float("nan")

    def reason_to_skip(self, norm: float) -> str | None:
        """Why an update of gradient norm ``norm`` would be skipped now (None: apply it)."""
        if not math.isfinite(norm):
            return "non-finite"
        if self.abs_limit and norm > self.abs_limit:
            return "abs"
        if self.skip_factor and self.warmed_up and self.history and norm > self.skip_factor * self.median():
            return "spike"
        return None

    def check(self, grad_norm: float, step: int) -> bool:
        """Record the update taken at ``step`` (1-based) with this pre-clip norm; True: apply it.
        Reads the norm on the host (see :meth:`decide` for the device-side way)."""
        self.sync()
        self._device = None                  # the host state moves on: decide() rebuilds from it
        norm = float(grad_norm)
        reason = self.reason_to_skip(norm)
        self._account(norm, reason, step)
        return reason is None

    def _account(self, norm: float, reason: str | None, step: int) -> None:
        """The bookkeeping of one decision (counts, history, streak, warnings)."""
        late = self.warmed_up
        self._window["steps"] += 1
        self.late_steps += late
        if reason is None:
            self.history.append(norm)
            self.accepted += 1
            self.consecutive = 0
            self.streak = {}
            self._window["clipped"] += bool(self.clip and norm > self.clip)
            return
        self._window["skipped"] += 1
        self.late_skipped += late
        if not self.streak:
            self.streak = {"first_step": step, "first_norms": [], "last_norms": [], "reasons": [],
                           "median": self.median()}
        self.consecutive += 1
        self.streak["last_step"] = step
        if len(self.streak["first_norms"]) < 3:
            self.streak["first_norms"].append(norm)
        self.streak["last_norms"] = (self.streak["last_norms"] + [norm])[-3:]
        if reason not in self.streak["reasons"]:
            self.streak["reasons"].append(reason)
        self._maybe_warn_skips()

    # ------------------------------------------------------------------ deciding on the device
    def decide(self, grad_norm: torch.Tensor, step: int) -> torch.Tensor:
        """The same rule as :meth:`check` for the update taken at ``step``, decided on
        ``grad_norm``'s device: returns a 0-dim bool tensor there, True where the update is to
        be skipped. No value is read on the host; the host bookkeeping follows at :meth:`sync`."""
        if len(self._pending) >= RECORD_CAP:
            self.sync()
        d = self._device_state(grad_norm.device)
        norm = grad_norm.detach().reshape(()).to(torch.float64)
        code = torch.zeros((), dtype=torch.int64, device=norm.device)
        if self.skip_factor:
            filled = (~torch.isnan(d.history)).sum()                    # accepted norms held (≤ window)
            ordered = torch.sort(d.history).values                       # NaN (empty slots) sort last
            lower = ordered.gather(0, ((filled - 1).clamp(min=0) // 2).view(1))
            upper = ordered.gather(0, (filled // 2).clamp(max=ordered.numel() - 1).view(1))
            median = ((lower + upper) / 2).reshape(())                   # statistics.median's rule
            spike = (d.accepted >= self.warmup) & (filled > 0) & (norm > self.skip_factor * median)
            code = torch.where(spike, 3, code)
        if self.abs_limit:
            code = torch.where(norm > self.abs_limit, 2, code)
        code = torch.where(torch.isfinite(norm), code, 1)
        if self.max_consecutive:   # past a stall every update is skipped until the host stops the run
            code = torch.where(d.consecutive >= self.max_consecutive, 4, code)
        skip = code != 0
        accept = ~skip
        slot = d.position.view(1)
        d.history.index_copy_(0, slot, torch.where(accept, norm, d.history.index_select(0, slot).reshape(())).view(1))
        d.position.copy_((d.position + accept) % d.history.numel())
        d.accepted.add_(accept)
        d.consecutive.copy_(torch.where(skip, d.consecutive + 1, 0))
        d.records[len(self._pending)].copy_(torch.stack([norm, code.to(torch.float64)]))
        self._pending.append(step)
        return skip

    def sync(self) -> None:
        """Read the decisions :meth:`decide` made since the last sync (one device → host read)
        and keep their books as :meth:`check` would have. Decisions after a stall are dropped
        (the device skipped them; the run stops)."""
        if not self._pending:
            return
        steps, self._pending = self._pending, []
        rows = self._device.records[: len(steps)].tolist()
        for (norm, code), step in zip(rows, steps):
            if self.stalled:
                break
            self._account(norm, REASONS[int(code)], step)

    def _device_state(self, device: torch.device) -> "_DeviceState":
        if self._device is None or self._device.history.device != device:
            self.sync()
            self._device = _DeviceState(self, device)
        return self._device

    @property
    def stalled(self) -> bool:
        """``max_consecutive`` updates in a row were skipped: the run must stop."""
        return bool(self.max_consecutive) and self.consecutive >= self.max_consecutive

    def stall_error(self) -> UpdatesSkippedError:
        """The one clear message: where skipping began, the norms seen, what to change."""
        s = self.streak
        norms = ", ".join(map(_fmt, s["first_norms"]))
        if s["last_step"] - s["first_step"] >= len(s["first_norms"]):
            norms += ", …, " + ", ".join(map(_fmt, s["last_norms"]))
        hints = []
        if "non-finite" in s["reasons"]:
            hints.append("non-finite norms mean a NaN/Inf loss or gradient: check the data for NaN/Inf pixels, "
                         "lower train.lr, or use train.precision=fp32")
        if "spike" in s["reasons"]:
            hints.append(f"the spike rule skips norms above train.skip_grad_factor={self.skip_factor:g} × the running "
                         f"median of accepted norms ({_fmt(s['median'])}): raise train.skip_grad_factor, or set it "
                         "to 0 to skip only non-finite updates")
        if "abs" in s["reasons"]:
            hints.append(f"train.skip_grad_norm_abs={self.abs_limit:g} is below these norms (the loss is summed "
                         "over pixels, so norms grow with image size): raise it or set it to 0 and rely on the "
                         "relative rule (train.skip_grad_factor)")
        return UpdatesSkippedError(
            f"{self.consecutive} updates in a row were skipped (steps {s['first_step']}–{s['last_step']}; the first "
            f"skipped step was {s['first_step']}), gradient norms {norms}. "
            + "; ".join(hints)
            + f". train.max_consecutive_skips={self.max_consecutive} stopped the run. No checkpoint was written from "
            f"step {s['first_step']} on: the run folder's checkpoint.pt, if any, holds the last good state "
            "(continue it with --resume once the cause is fixed)."
        )

    # ------------------------------------------------------------------ logging
    def window_stats(self) -> dict[str, float]:
        """Skip/clip statistics of the log window just ended (then a new window starts)."""
        self.sync()
        w = self._window
        steps = max(w["steps"], 1)
        stats = {"skipped": w["skipped"], "skipped_frac": w["skipped"] / steps, "clipped_frac": w["clipped"] / steps,
                 "grad_norm_median": self.median()}
        if (self.warn and not self._warned_clips and self.warmed_up and w["steps"] >= 5
                and stats["clipped_frac"] > WARN_CLIP_FRACTION):
            self._warned_clips = True
            warnings.warn(
                f"train.grad_clip={self.clip:g} clipped {stats['clipped_frac']:.0%} of the last {w['steps']} updates "
                f"(median gradient norm {_fmt(self.median())}): most updates are scaled down. Set train.grad_clip "
                "above the typical norm, or 0 to turn clipping off (spikes are skipped by train.skip_grad_factor).",
                RuntimeWarning, stacklevel=2)
        self._window = {"steps": 0, "skipped": 0, "clipped": 0}
        return stats

    def _maybe_warn_skips(self) -> None:
        if (self.warn and not self._warned_skips and self.late_steps >= WARN_MIN_STEPS
                and self.late_skipped > WARN_SKIP_FRACTION * self.late_steps):
            self._warned_skips = True
            warnings.warn(
                f"{self.late_skipped} of the {self.late_steps} updates since warm-up were skipped "
                f"(> {WARN_SKIP_FRACTION:.0%}; median gradient norm {_fmt(self.median())}, last skipped "
                f"{_fmt(self.streak['last_norms'][-1])}); see skipped_frac in metrics.jsonl and "
                "train.skip_grad_factor / train.skip_grad_norm_abs.", RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        self.sync()
        return {"history": list(self.history), "accepted": self.accepted, "late_steps": self.late_steps,
                "late_skipped": self.late_skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._device, self._pending = None, []
        self.history.clear()
        self.history.extend(float(x) for x in state["history"])
        self.accepted, self.late_steps, self.late_skipped = (state["accepted"], state["late_steps"],
                                                             state["late_skipped"])


class _DeviceState:
    """What :meth:`UpdateGuard.decide` keeps on the device: the accepted norms (a ring of the
    window's size, NaN where empty; the oldest is overwritten first, as the host deque drops
    it), the next slot, the accepted and in-a-row counts, and the decisions not yet synced
    (norm, reason code). Made from the host state, which is exact at that moment."""

    def __init__(self, guard: UpdateGuard, device: torch.device) -> None:
        size = guard.history.maxlen
        held = list(guard.history)
        self.history = torch.full((size,), float("nan"), dtype=torch.float64)
        self.history[: len(held)] = torch.tensor(held, dtype=torch.float64)
        self.history = self.history.to(device)
        self.position = torch.tensor(len(held) % size, device=device)
        self.accepted = torch.tensor(guard.accepted, device=device)
        self.consecutive = torch.tensor(guard.consecutive, device=device)
        self.records = torch.zeros(RECORD_CAP, 2, dtype=torch.float64, device=device)
