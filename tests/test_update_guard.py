"""The update guard (seqvae.training.update_guard): a skip rule relative to recent gradient norms."""
import math
import warnings

import pytest
import torch

from seqvae.training.update_guard import RECORD_CAP, UpdateGuard


def _norms(scale: float, n: int = 200, spikes: dict[int, float] | None = None) -> list[float]:
    g = torch.Generator().manual_seed(0)
    norms = (scale * (1 + 0.3 * torch.randn(n, generator=g)).abs()).tolist()
    for i, factor in (spikes or {}).items():
        norms[i] = scale * factor
    return norms


def _decisions(norms: list[float], **kw) -> list[bool]:
    guard = UpdateGuard(warn=False, **kw)
    return [guard.check(n, i + 1) for i, n in enumerate(norms)]


def test_relative_rule_skips_spikes_at_any_scale_and_nothing_else():
    spikes = {120: 40.0, 150: float("nan"), 170: float("inf")}
    reference = _decisions(_norms(1.0, spikes=spikes), skip_factor=10.0, warmup=50)
    assert [i for i, ok in enumerate(reference) if not ok] == [120, 150, 170]
    # the loss is summed over pixels: norms 2 000× larger (32×32 RGB) or smaller give the same decisions
    for scale in (2000.0, 1e-3):
        assert _decisions(_norms(scale, spikes=spikes), skip_factor=10.0, warmup=50) == reference
    # an absolute threshold (named as such) does not scale: 1 000 skips every 2 000-sized update
    assert _decisions([1800.0, 2250.0, 2000.0], abs_limit=1000.0) == [False, False, False]


def test_warmup_spikes_pass_and_non_finite_never_does():
    norms = [1.0, 100.0, float("nan"), 1.0]
    assert _decisions(norms, skip_factor=10.0, warmup=3) == [True, True, False, True]


def test_warns_once_when_many_updates_after_warmup_are_skipped():
    guard = UpdateGuard(skip_factor=10.0, warmup=5, max_consecutive=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1, 61):
            guard.check(float("nan") if step % 10 == 0 else 1.0, step)   # 10 % skipped
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "updates since warm-up were skipped" in messages[0]


def test_consecutive_skips_stall_and_an_accepted_update_resets_the_streak():
    guard = UpdateGuard(skip_factor=10.0, warmup=2, max_consecutive=3, warn=False)
    for step, norm in enumerate([1.0, 1.0, 50.0, 60.0, 1.0, 70.0, 80.0], start=1):
        guard.check(norm, step)
        assert not guard.stalled
    guard.check(90.0, 8)
    assert guard.stalled
    message = str(guard.stall_error())
    assert "first skipped step was 6" in message and "70, 80, 90" in message
    assert "train.skip_grad_factor=10" in message


def test_state_round_trip_keeps_decisions():
    norms = _norms(5.0, n=120, spikes={100: 30.0})
    a = UpdateGuard(warn=False, warmup=20)
    for i, n in enumerate(norms[:80]):
        a.check(n, i + 1)
    b = UpdateGuard(warn=False, warmup=20)
    b.load_state_dict(a.state_dict())
    rest_a = [a.check(n, i + 81) for i, n in enumerate(norms[80:])]
    rest_b = [b.check(n, i + 81) for i, n in enumerate(norms[80:])]
    assert rest_a == rest_b and rest_a[20] is False and math.isclose(a.median(), b.median())


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        UpdateGuard(skip_factor=0.5)
    with pytest.raises(ValueError):
        UpdateGuard(max_consecutive=-1)


# ------------------------------------------------- decided on the device (issue 27)
def _books(guard: UpdateGuard) -> dict:
    return {"state": guard.state_dict(), "consecutive": guard.consecutive, "stalled": guard.stalled,
            "streak": guard.streak, "median": guard.median()}


SETTINGS = [dict(skip_factor=10.0, warmup=50),                                  # the defaults' rule
            dict(skip_factor=2.0, warmup=5, window=6, clip=3.5, abs_limit=9.0),  # a ring that wraps, every rule
            dict(skip_factor=0.0, warmup=0, max_consecutive=4),                   # non-finite only
            dict(skip_factor=1.5, warmup=3, window=4, max_consecutive=3)]         # spikes that stall it


@pytest.mark.parametrize("kw", SETTINGS, ids=["default", "all_rules", "nonfinite_only", "stalls"])
def test_device_decisions_and_books_equal_the_host_ones(kw):
    """decide() (a tensor in, a tensor out, the books kept at sync()) is check() exactly:
    the same verdicts, window statistics, history (the median of an even count is the mean of
    the two middle values), streak, stall message and warnings, whenever the host syncs —
    also when it never does (the record fills and decide() syncs itself)."""
    spikes = {70: 40.0, 71: float("nan"), 72: 30.0, 73: float("inf"), 74: 25.0, 75: 33.0, 150: float("-inf")}
    norms = _norms(3.0, n=RECORD_CAP + 80, spikes=spikes)          # float32 values, as a real norm is
    sync_at = {7, 8, 20, 64, 65, 66, 90, 200}

    def run(guard, ask):
        verdicts, books = [], {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step, norm in enumerate(norms, start=1):
                if ask == "host" and guard.stalled:
                    break                                           # the trainer stops here
                verdicts.append(guard.check(norm, step) if ask == "host"
                                else not bool(guard.decide(torch.tensor(norm, dtype=torch.float32), step)))
                if step in sync_at:
                    books[step] = (guard.window_stats(), _books(guard))
            books["end"] = _books(guard)
        return verdicts, books, [str(w.message) for w in caught], guard

    host_says, host_books, host_warned, host = run(UpdateGuard(**kw), "host")
    device_says, device_books, device_warned, device = run(UpdateGuard(**kw), "device")
    n = len(host_says)
    assert device_says[:n] == host_says and not any(device_says[n:])    # past a stall: every update skipped
    if host.stalled:
        assert n < len(norms) and str(device.stall_error()) == str(host.stall_error())
        host_books = {k: v for k, v in host_books.items() if k == "end" or k <= n}
        device_books = {k: v for k, v in device_books.items() if k == "end" or k <= n}
    else:
        assert n == len(norms) and sum(not ok for ok in host_says) >= 3
    assert device_books == host_books
    assert device_warned == host_warned


def test_device_guard_continues_a_loaded_state():
    norms = _norms(5.0, n=140, spikes={100: 30.0, 120: float("nan")})
    a = UpdateGuard(warn=False, warmup=20, window=30)
    for i, n in enumerate(norms[:80]):
        a.check(n, i + 1)
    b = UpdateGuard(warn=False, warmup=20, window=30)
    b.load_state_dict(a.state_dict())
    rest_a = [a.check(n, i + 81) for i, n in enumerate(norms[80:])]
    rest_b = [not bool(b.decide(torch.tensor(n), i + 81)) for i, n in enumerate(norms[80:])]
    assert rest_a == rest_b and rest_a[20] is False and rest_a[40] is False
    assert _books(a) == _books(b)
