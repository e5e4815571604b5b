"""The demo networks: a small all-convolutional GAP classifier and its GMP twin.

Input 128 x 128; the last conv map is 32 x 32 with 128 units (stride 4). Each unit is
``relu(local(detail)) * sigmoid(gate(detail, context))``: stride-4 detail says where a part is,
a stride-8 context branch (receptive field 71 pixels, enough to see where two parts meet: a
class is an arrangement of parts) says whether that part belongs to an object of the unit's
kind. So units fire on the object itself, not on everything within reach of it, and class maps
give tight boxes. Global average (or max) pooling and one linear layer with non-negative weights
follow. (Tried first: dilated layers, whose maps were diffuse and gridded; a plain stride-8 stack,
whose maps spread a cell or more around small objects; detail and context concatenated through
a 1 x 1 layer, where context dominated the maps just the same.)

Example:
    >>> model = DemoModel(pool="avg")
    >>> model.features(torch.zeros(1, 3, 128, 128)).shape
    torch.Size([1, 128, 32, 32])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camviz.demo.world import CLASSES, IMAGE_SIZE
from camviz.errors import WeightsUnavailable
from camviz.gapnet import GapNet
from camviz.images import Preprocess

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHT_FILES = {"avg": "demo_gap.pt", "max": "demo_gmp.pt"}
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
NUM_UNITS = 128


def demo_transform() -> Preprocess:
    """The preprocessing of the demo networks: shorter side to 128, centre crop 128, normalise.

    Example:
        >>> demo_transform().output_size
        (128, 128)
    """
    return Preprocess(resize=IMAGE_SIZE, crop=(IMAGE_SIZE, IMAGE_SIZE), mean=MEAN, std=STD)


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class DemoFeatures(nn.Module):
    """The conv trunk: stride-4 detail gated by stride-8 context, output at stride 4.

    ``stem`` (stride 4, 32 x 32 at 128 input, receptive field 15 px) sees parts; ``context``
    (stride 8, four 3 x 3 layers, receptive field 71 px) sees arrangements and is upsampled
    bilinearly. Unit k = ``relu(local_k(stem)) * sigmoid(gate_k(stem, context))``, (B, 128,
    32, 32), non-negative: it fires where a part is *and* the context says which object it
    belongs to, which keeps class maps on the object.

    Example:
        >>> DemoFeatures()(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 128, 32, 32])
    """

    def __init__(self, width: int = 96) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            *_block(3, 32, stride=2),  # 64
            *_block(32, 64, stride=2),  # 32
            *_block(64, 64),
        )
        self.context = nn.Sequential(
            *_block(64, width, stride=2),  # 16
            *_block(width, width),
            *_block(width, width),
            *_block(width, width),
        )
        self.local = nn.Sequential(
            nn.Conv2d(64, NUM_UNITS, 1, bias=False), nn.BatchNorm2d(NUM_UNITS)
        )
        self.gate = nn.Sequential(
            nn.Conv2d(64 + width, NUM_UNITS, 1, bias=False), nn.BatchNorm2d(NUM_UNITS)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        c = F.interpolate(self.context(s), size=s.shape[-2:], mode="bilinear", align_corners=False)
        return F.relu(self.local(s)) * torch.sigmoid(self.gate(torch.cat([s, c], dim=1)))


def stride8_features(width: int = 96) -> nn.Sequential:
    """The first-stage trunk: a plain stride-8 stack, 128 units on a 16 x 16 map at 128 input.

    Trained first (it learns fast), then its layers seed :class:`DemoFeatures`'s ``stem`` and
    ``context`` (see :func:`camviz.demo.train.warm_start`).

    Example:
        >>> stride8_features()(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 128, 16, 16])
    """
    return nn.Sequential(
        *_block(3, 32, stride=2),  # 64
        *_block(32, 64, stride=2),  # 32
        *_block(64, 64),
        *_block(64, width, stride=2),  # 16
        *_block(width, width),
        *_block(width, width),
        *_block(width, NUM_UNITS),
    )


class DemoModel(nn.Module):
    """features (all conv) -> global average or max pooling -> one linear layer.

    ``arch="fused"`` (the bundled nets, gated trunk) or ``"stride8"`` (the first training
    stage). The bundled nets' head weights are non-negative (kept so in training, see
    :mod:`camviz.demo.train`), so a class map only adds up evidence for its class.
    ``state_dict`` keys are ``features.*`` and ``head.*``, the same as ``GapNet(features,
    head)``'s model, so weights move between the two.

    Example:
        >>> DemoModel(pool="max")(torch.zeros(2, 3, 128, 128)).shape
        torch.Size([2, 9])
    """

    def __init__(
        self, pool: str = "avg", num_classes: int = len(CLASSES), width: int = 96,
        arch: str = "fused",
    ):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        if arch not in ("fused", "stride8"):
            raise ValueError(f"arch must be 'fused' or 'stride8', got {arch!r}")
        self.pool, self.arch = pool, arch
        self.features = DemoFeatures(width) if arch == "fused" else stride8_features(width)
        self.head = nn.Linear(NUM_UNITS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = f.amax(dim=(2, 3)) if self.pool == "max" else f.mean(dim=(2, 3))
        return self.head(pooled)


def weights_path(pool: str = "avg") -> Path:
    """The bundled weights file of the GAP ("avg") or GMP ("max") demo network.

    Example:
        >>> weights_path("max").name
        'demo_gmp.pt'
    """
    return WEIGHTS_DIR / WEIGHT_FILES[pool]


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a demo state dict with ``weights_only=True``, or raise :class:`WeightsUnavailable`.

    Example:
        >>> load_state("nowhere.pt")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        camviz.errors.WeightsUnavailable: demo weights not found: nowhere.pt ...
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsUnavailable(
            f"demo weights not found: {p} (reinstall camviz, or train them with "
            "`python -m camviz.demo.train`)"
        )
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsUnavailable(
            f"{p} is not a state dict that loads with weights_only=True ({err}); retrain with "
            "`python -m camviz.demo.train`"
        ) from err
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_demo(
    weights: str | Path | None = "DEFAULT", device: str | torch.device = "auto",
    pool: str = "avg",
) -> GapNet:
    """The demo GAP network (``pool="avg"``) or its GMP twin (``"max"``) as a :class:`GapNet`.

    ``weights``: "DEFAULT" for the bundled weights, a path to a state dict (of the fused or the
    first-stage stride-8 net), or None for random weights. Class names and the preprocessing
    come with it.

    Example:
        >>> net = load_demo(device="cpu")
        >>> net.classes[:3], net.transform.crop, net.pool
        (['house', 'tree', 'sign'], (128, 128), 'avg')
    """
    model = DemoModel(pool=pool)
    if weights is not None:
        path = weights_path(pool) if weights == "DEFAULT" else Path(weights)
        state = load_state(path)
        if "features.0.weight" in state:  # first-stage weights (python -m camviz.demo.train)
            model = DemoModel(pool=pool, arch="stride8")
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise WeightsUnavailable(
                f"{path} does not fit the demo network ({str(err).splitlines()[0]}); retrain "
                "with `python -m camviz.demo.train`"
            ) from err
    return GapNet(
        model.features, model.head, pool=pool, classes=list(CLASSES),
        transform=demo_transform(), device=device, probe_size=IMAGE_SIZE,
    )


def load_demo_gap(weights: Any = "DEFAULT", device: str | torch.device = "auto") -> GapNet:
    """Loader registered as ``camviz.load_model("demo")``."""
    return load_demo(weights, device, pool="avg")


def load_demo_gmp(weights: Any = "DEFAULT", device: str | torch.device = "auto") -> GapNet:
    """Loader registered as ``camviz.load_model("demo-gmp")``."""
    return load_demo(weights, device, pool="max")


def training_info() -> dict[str, Any]:
    """What the bundled weights were trained on and how well they do (from weights/demo.json).

    Example:
        >>> isinstance(training_info(), dict)
        True
    """
    p = WEIGHTS_DIR / "demo.json"
    return json.loads(p.read_text()) if p.is_file() else {}
