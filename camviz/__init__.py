"""camviz: class activation maps, their units and weakly supervised boxes for GAP networks.

Example:
    >>> import camviz
    >>> net = camviz.load_model("resnet18", weights=None)
    >>> res = net.run(torch.rand(1, 3, 224, 224))  # doctest: +SKIP
    >>> res.cams(size="input").shape  # doctest: +SKIP
    torch.Size([1, 1, 224, 224])
"""

from __future__ import annotations

# --- core ---
from camviz.errors import (
    CamvizError,
    DatasetError,
    ImageError,
    NotAGapNetwork,
    NotExact,
    UnknownModel,
    UnsafePath,
    WeightsUnavailable,
)
from camviz.gapnet import GapNet, load_model, register_model, resolve_device
from camviz.images import Preprocess, load_image
from camviz.result import CamResult, TopK, Units

# --- localization ---
from camviz.datasets import WsolDataset, WsolMetadata
from camviz.localize import InvalidMap, paper_box, paper_boxes, reference_boxes
from camviz.metrics import BoxAccuracy, ClassicLocalization, PixelAP, box_iou

# --- units ---
from camviz.scan import UnitStats, scan
from camviz.stats import RunningQuantile, RunningTopK
from camviz.units import Dissection, PartsFolder, class_units, dissect, unit_masks

# --- GAP conversion ---
from camviz.convert import load_converted, to_gap
from camviz.finetune import fine_tune

# --- demo ---
from camviz.demo import ensure_split  # importing camviz.demo registers "demo" and "demo-gmp"

# --- widgets ---
from camviz.widgets import Browser, browse

__version__ = "0.1.0"
