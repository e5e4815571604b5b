"""camviz: class activation maps, their units and weakly supervised boxes for GAP networks.

``import camviz`` is light: the widgets (ipywidgets, plotly), the paper figures (matplotlib)
and the demo world load when first used (``camviz.Browser``, ``camviz.ensure_split``, ...).

Example:
    >>> import camviz
    >>> net = camviz.load_model("resnet18", weights=None, device="cpu")
    >>> res = net.run(torch.rand(1, 3, 224, 224))
    >>> res.cams(size="input").shape
    torch.Size([1, 1, 224, 224])
"""

from __future__ import annotations

import importlib
from typing import Any

import torch  # noqa: F401  (the example above)

# --- core ---
from camviz.errors import (
    CamvizError,
    DatasetError,
    HeadError,
    ImageError,
    MissingExtra,
    NotAGapNetwork,
    NotExact,
    UnknownModel,
    UnsafePath,
    WeightsUnavailable,
)
from camviz.gapnet import GapNet, resolve_device
from camviz.images import Placement, Preprocess, load_image
from camviz.models import load_model
from camviz.registry import Adapter, list_models, register_adapter, register_model
from camviz.result import CamResult, TopK, Units

# --- localization ---
from camviz.datasets import WsolDataset, WsolMetadata
from camviz.evaluate import evaluate
from camviz.localize import InvalidMap, paper_box, paper_boxes, reference_boxes
from camviz.metrics import BoxAccuracy, ClassicLocalization, PixelAP, box_iou
from camviz.faithfulness import ConfidenceChange, DeletionInsertion, PointingGame

# --- units ---
from camviz.datasets import PartsFolder
from camviz.dissect import Dissection, dissect
from camviz.scan import UnitStats, scan
from camviz.stats import RunningQuantile, RunningTopK
from camviz.units import class_units, unit_masks

# --- new heads (generic localization) ---
from camviz.heads import fit_head, load_head, pool_features
from camviz.linearfit import fit_linear

__version__ = "0.1.0"

# Loaded on first use (PEP 562), so that `import camviz` stays light.
_LAZY = {
    "Browser": "camviz.widgets",
    "browse": "camviz.widgets",
    "ensure_split": "camviz.demo",
    # GAP conversion (camviz.convert registers its adapter, which loads timm's families)
    "to_gap": "camviz.convert",
    "load_converted": "camviz.convert",
    "fine_tune": "camviz.finetune",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'camviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
