"""The structured ELBO every model returns, so the one training loop never knows which
model it trains (DESIGN: "One idea holds it together").

    ELBO = Σ_t log p(x_t | ·) − Σ_t KL(q(z_t | ·) ‖ p(z_t | ·))

summed over every pixel, channel and latent dimension (paper §3.1), averaged over the
batch only in ``loss``. An image model is the case T = 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class ELBO:
    nll: Tensor                 # [B, T] nats: −log p(x_t | ·) summed over C·H·W
    kl: Tensor                  # [B, T] nats: KL summed over latent dims (zeros for deterministic models)
    dims: int                   # modelled data dimensions per example (T·C·H·W)
    valid_bound: bool = True    # False if the likelihood peeked at x (per-image optimal σ)
    extras: dict[str, Tensor] = field(default_factory=dict)  # e.g. per-layer KL [B, L]

    @property
    def neg_elbo(self) -> Tensor:
        """−ELBO per example, nats: ``[B]`` (the paper's "−log p" bound)."""
        return self.nll.sum(1) + self.kl.sum(1)

    @property
    def loss(self) -> Tensor:
        """The training objective: −ELBO averaged over the batch (β = 1)."""
        return self.neg_elbo.mean()

    def bits_per_dim(self) -> Tensor:
        """−ELBO per example in bits per data dimension: ``[B]``."""
        return self.neg_elbo / (self.dims * math.log(2.0))

    def summary(self) -> dict[str, Tensor]:
        """Batch means for logging (tensors; convert with ``float`` when writing)."""
        out = {
            "neg_elbo": self.neg_elbo.mean().detach(),
            "nll": self.nll.sum(1).mean().detach(),
            "kl": self.kl.sum(1).mean().detach(),
            "bpd": self.bits_per_dim().mean().detach(),
        }
        for key, value in self.extras.items():
            value = value.detach().float()
            if value.dim() <= 1:
                out[key] = value.mean()
            else:  # [B, L]: one entry per layer/step, e.g. kl_per_layer_00 ... kl_per_layer_14
                for i, column in enumerate(value.mean(0)):
                    out[f"{key}_{i:02d}"] = column
        return out


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor | None = None, logvar_p: Tensor | None = None) -> Tensor:
    """KL(N(mu_q, e^logvar_q) ‖ N(mu_p, e^logvar_p)) elementwise in float32 (prior N(0, I) if omitted)."""
    mu_q, logvar_q = mu_q.float(), logvar_q.float()
    if mu_p is None:
        mu_p = torch.zeros_like(mu_q)
        logvar_p = torch.zeros_like(logvar_q)
    mu_p, logvar_p = mu_p.float(), logvar_p.float()
    return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p) - 1.0)
