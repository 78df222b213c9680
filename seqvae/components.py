"""Imports every module that registers a data set, model or likelihood head."""
import seqvae.data.images  # noqa: F401
import seqvae.likelihoods.gaussian  # noqa: F401
import seqvae.models.conv_vae  # noqa: F401
import seqvae.data.bair  # noqa: F401
import seqvae.likelihoods.student_t  # noqa: F401
import seqvae.likelihoods.bernoulli  # noqa: F401
import seqvae.likelihoods.categorical  # noqa: F401
import seqvae.likelihoods.bitwise  # noqa: F401
import seqvae.likelihoods.logistic_mixture  # noqa: F401
import seqvae.likelihoods.discretized  # noqa: F401
import seqvae.models.hvae  # noqa: F401
import seqvae.worlds.pusher  # noqa: F401  (data set "pusher" and its video metric)
import seqvae.data.videos  # noqa: F401
import seqvae.models.svg  # noqa: F401
