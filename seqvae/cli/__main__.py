"""``python -m seqvae.cli`` / ``torchrun -m seqvae.cli``: the same entry point as ``seqvae``."""
import sys

from seqvae.cli import main

sys.exit(main())
