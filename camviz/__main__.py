"""``python -m camviz ...`` runs the ``camviz`` command (also under ``torchrun``)."""

import sys

import torch

from camviz.cli import main

if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
