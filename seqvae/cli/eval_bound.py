"""``seqvae eval``'s −log p bound and, for an optimal-σ decoder, the held-out estimate to quote.

The optimal-σ head scores with σ = its EMA of the training batches' σ* (paper App. C), which
follows the training error: once a model overfits, that σ is too small for held-out data and
the bound suffers (on 5 000 real MNIST digits it lost to β = 0.01 by 55–144 nats, where σ² set
to the validation reconstruction error beat every β by 76–112 nats; issue 23). So whenever the
run's data have a validation split, ``seqvae eval`` also scores the split with σ² = the
reconstruction MSE on the validation split (:func:`seqvae.evaluation.elbo.validation_sigma_bound`,
still a valid bound: the scored split is never looked at) and names that one as the figure to
quote. ``--calibrate-sigma`` insists on it (an error where it cannot be had),
``--no-calibrate-sigma`` leaves it out; without a validation split the output says so.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch
from torch.utils.data import Dataset

from seqvae.build import validation_split
from seqvae.evaluation.elbo import can_calibrate_sigma, validation_sigma_bound

VAL_SPLIT_ONLY = "--calibrate-sigma sets σ on the validation split; score another split (--split test)"


def print_bound(result: dict[str, Any]) -> None:
    """The bound's lines as ``seqvae eval`` has always printed them (σ: the head's evaluation σ)."""
    note = "" if result["valid_bound"] else "  (per-image σ looks at x: not a true bound)"
    print(f"-log p bound: {result['neg_elbo']:.2f} nats per example, {result['bpd']:.4f} bits/dim{note}")
    print(f"  NLL {result['nll']:.2f}  KL {result['kl']:.2f}  "
          + "  ".join(f"{k} {result[k]:.4g}" for k in ("sigma", "sigma_ema", "beta_eff") if k in result))


def plan_calibration(args: argparse.Namespace, model, cfg: Any) -> tuple[Dataset | None, str]:
    """The validation split to set σ on as ``args.calibrate_sigma`` asks (True: required, an
    error where it cannot be had; None: whenever there is one; False: never), or None and why
    not. Called before anything is scored, so that an impossible request fails at once."""
    wanted = args.calibrate_sigma
    if wanted is False:
        return None, "off (--no-calibrate-sigma)"
    if not can_calibrate_sigma(model):
        head = type(model.likelihood).__name__
        if wanted:
            raise ValueError(f"--calibrate-sigma needs the optimal-σ decoder (likelihood.name: optimal_sigma); this "
                             f"model's head is {head}")
        return None, f"not applicable: the {head} decoder's σ is not a training average"
    if args.split == "val":
        if wanted:
            raise ValueError(VAL_SPLIT_ONLY)
        return None, ("not calibrated: the scored split is the validation split itself (--split test for the "
                      "held-out bound)")
    val, why = validation_split(cfg)
    if val is None and wanted:
        raise ValueError(f"--calibrate-sigma needs a validation split, and this run's data have none: {why}")
    return val, "" if val is not None else f"no validation split: {why}"


def held_out_bound(val: Dataset | None, why: str, model, dataset: Dataset, result: dict[str, Any], batch_size: int,
                   device: torch.device, dtype: torch.dtype | None, max_batches: int = 0) -> bool:
    """With a validation split ``val`` (from :func:`plan_calibration`, else ``why`` not), add the
    validation-σ bound to ``result`` and print it; record in ``result`` which bound to quote
    (``quote``) and how σ was set (``sigma_calibration``). Returns whether the bound was computed."""
    result["quote"] = "neg_elbo"
    if val is None:
        result["sigma_calibration"] = why
        if why.startswith("no validation split"):
            print(f"{why}. The bound above uses the training EMA of σ, which follows the training error; a "
                  f"validation split gives the held-out bound")
        elif why.startswith("not calibrated"):
            print(f"σ {why}")
        return False
    result.update(validation_sigma_bound(model, val, dataset, batch_size, device, dtype, max_batches))
    result["quote"] = "val_sigma_neg_elbo"
    result["sigma_calibration"] = ("σ² = the reconstruction MSE on the validation split (quote val_sigma_neg_elbo: "
                                   "the EMA σ follows the training error)")
    print(f"-log p bound with σ set on the validation split: {result['val_sigma_neg_elbo']:.2f} nats per example, "
          f"{result['val_sigma_bpd']:.4f} bits/dim  (σ = {result['val_sigma']:.4g}, its reconstruction RMSE; "
          f"NLL {result['val_sigma_nll']:.2f})")
    print(f"  quote this one, the held-out estimate: the EMA σ ({result.get('sigma_ema', float('nan')):.4g}) of the "
          f"bound above follows the training error")
    return True
