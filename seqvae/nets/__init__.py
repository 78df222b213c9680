"""Convolutional backbones."""
