"""``python -m camviz ...`` runs the ``camviz`` command (also under ``torchrun``): the same
entry point as the console script, in the same state (gradients on: ``fine-tune`` trains)."""

import sys

from camviz.cli import main

if __name__ == "__main__":
    sys.exit(main())
