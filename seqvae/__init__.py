"""seqvae: sequential VAEs with calibrated decoders (σ-VAE) for video prediction.

The Python API (:mod:`seqvae.api`): ``seqvae.load``, ``seqvae.rollout``, ``seqvae.plan``,
``seqvae.train``, ``seqvae.evaluate``. They are imported on first use, so ``import seqvae``
itself stays light and any submodule imports without the rest.
"""
__version__ = "0.1.0"

API = ("load", "rollout", "plan", "train", "evaluate")
__all__ = [*API, "__version__"]


def __getattr__(name: str):
    if name in API:
        from seqvae import api

        return getattr(api, name)
    raise AttributeError(f"module 'seqvae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API})
