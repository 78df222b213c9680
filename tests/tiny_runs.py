"""Configs of the tiny training runs several test modules share (a 16×16 conv VAE, 6 steps)."""

TINY_IMAGE_RUN = {
    "data": {"name": "shapes", "image_size": 16, "train_size": 40, "test_size": 16, "val_size": 8},
    "model": {"name": "conv_vae", "base_channels": 8, "latent_dim": 4},
    "likelihood": {"name": "optimal_sigma"},
    "train": {"steps": 6, "batch_size": 8, "lr": 1e-3, "log_every": 2, "eval_every": 3, "eval_batches": 1,
              "image_every": 0, "checkpoint_every": 3},
}
