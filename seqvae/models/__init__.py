"""Sequence VAEs: the image VAE (T = 1), the hierarchical VAE and SVG."""
