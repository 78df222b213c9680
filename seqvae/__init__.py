"""seqvae: sequential VAEs with calibrated decoders (σ-VAE) for video prediction."""
__version__ = "0.1.0"
