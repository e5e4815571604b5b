"""The demo world's fully connected baseline and its GAP conversion (the paper's VGGnet-GAP).

``FcNet`` is VGG in small: 3 x 3 conv blocks (batch norm, ReLU), each ending in 2 x 2 max
pooling (16, 32, 64, 96 channels; 1, 1, 2, 2 convs; 8 x 8 x 96 at 128 x 128 input), VGG's
``avgpool`` slot pooling to a fixed grid, then ``flatten -> FC 128 -> ReLU -> FC 128 -> ReLU ->
FC`` to the 9 classes (He-initialised). The grid is 1 x 1, max-pooled: in trials (300 steps of
32, the same trunk) FC stacks over a 4 x 4 average grid, a 2 x 2 max grid (also with He init or
batch norm in the stack) and a 1 x 1 average grid all stayed at 14-17% train accuracy, near
chance, while the 1 x 1 max grid reached 21% and climbed; within this recipe's budget only it
trains. camviz refuses the net (no map of a fully connected stack is exact);
:func:`camviz.convert.to_gap` converts it with the paper's recipe (drop the grid pooling, the FC
stack and the last max pooling, which leaves a 16 x 16 map at stride 8; add conv 3 x 3 (256) ->
ReLU -> GAP -> Linear) and :func:`camviz.finetune.fine_tune` fine-tunes it. Both are trained by
``python -m camviz.demo.train_fc`` and bundled: ``camviz.load_model("demo-fc-gap")`` is the
converted, fine-tuned net, :func:`load_fcnet` the baseline as a plain module
(``camviz.load_model("demo-fc")`` raises the refusal, on purpose).

Example:
    >>> FcNet()(torch.zeros(2, 3, 128, 128)).shape
    torch.Size([2, 9])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from camviz.convert import (
    Family,
    GapConverted,
    fc_stack_to_gap,
    load_converted,
    register_converter,
    to_gap,
)
from camviz.demo.net import WEIGHTS_DIR, demo_transform
from camviz.demo.world import CLASSES
from camviz.errors import NotAGapNetwork, WeightsUnavailable
from camviz.gapnet import GapNet
from camviz.registry import register_adapter
from camviz.sources import Source

FC_FILE = "demo_fc.safetensors"
GAP_FILE = "demo_fc_gap.safetensors"
GAP_WIDTH = 256


class FcNet(nn.Module):
    """features (conv blocks, max pooling) -> avgpool (grid) -> classifier (three FC layers).

    The layout and ``forward`` of torchvision's VGG, small: at 128 x 128 input the last
    pooling leaves 8 x 8 x 96, ``avgpool`` (``grid_pool`` "max" or "avg") a ``grid`` x ``grid``
    grid, ``classifier`` 96 grid^2 -> ``hidden`` -> ``hidden`` -> ``num_classes``.

    Example:
        >>> FcNet().features(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 96, 8, 8])
    """

    def __init__(self, num_classes: int = len(CLASSES),
                 channels: tuple[int, ...] = (16, 32, 64, 96),
                 convs: tuple[int, ...] = (1, 1, 2, 2), hidden: int = 128, grid: int = 1,
                 grid_pool: str = "max", dropout: float = 0.0) -> None:
        super().__init__()
        self.config = {"num_classes": num_classes, "channels": list(channels),
                       "convs": list(convs), "hidden": hidden, "grid": grid,
                       "grid_pool": grid_pool, "dropout": dropout}
        layers: list[nn.Module] = []
        cin = 3
        for cout, n in zip(channels, convs):
            for _ in range(n):
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                           nn.ReLU(inplace=True)]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.num_classes = num_classes
        self.features = nn.Sequential(*layers)
        self.avgpool = (nn.AdaptiveMaxPool2d if grid_pool == "max" else nn.AdaptiveAvgPool2d)(grid)
        self.classifier = nn.Sequential(
            nn.Linear(cin * grid * grid, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.classifier:  # He initialisation, as VGG's convs (torch's default is 1/3)
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _weights(path: str | Path | None, default: str) -> Path:
    p = WEIGHTS_DIR / default if path in (None, "DEFAULT") else Path(path)
    if not p.is_file():
        raise WeightsUnavailable(f"demo weights not found: {p} (reinstall camviz, or train "
                                 "them with `python -m camviz.demo.train_fc`)")
    return p


def load_fcnet(weights: str | Path | None = "DEFAULT") -> FcNet:
    """The fully connected baseline as a plain module (eval mode, CPU); ``weights=None``:
    random weights, else "DEFAULT" (bundled) or a safetensors file.

    Example:
        >>> load_fcnet(None).classifier[-1].out_features
        9
    """
    model = FcNet()
    if weights is not None:
        p = _weights(weights, FC_FILE)
        try:
            model.load_state_dict(load_file(str(p)))
        except (OSError, RuntimeError, ValueError) as err:
            raise WeightsUnavailable(f"{p} does not hold FcNet weights ({err}); retrain with "
                                     "`python -m camviz.demo.train_fc`") from err
    return model.eval()


def load_demo_fc(weights: Any = "DEFAULT", device: str | torch.device = "auto") -> GapNet:
    """Loader of ``camviz.load_model("demo-fc")``: it raises camviz's refusal of the FC net.

    Example:
        >>> load_demo_fc(None)
        Traceback (most recent call last):
        ...
        camviz.errors.NotAGapNetwork: FcNet: `classifier` is a stack of fully connected ...
    """
    return GapNet.from_model(load_fcnet(weights), classes=list(CLASSES),
                             transform=demo_transform(), device=device, probe_size=128)


def load_demo_fc_gap(weights: Any = "DEFAULT", device: str | torch.device = "auto") -> GapNet:
    """Loader of ``camviz.load_model("demo-fc-gap")``: the converted, fine-tuned FcNet
    (bundled, or a file written by ``python -m camviz.demo.train_fc`` / ``camviz fine-tune``).

    Example:
        >>> load_demo_fc_gap(device="cpu").num_units  # doctest: +SKIP
        256
    """
    if weights is None:
        model = to_gap_demo(FcNet())
        return GapNet.from_model(model, classes=list(CLASSES), transform=demo_transform(),
                                 device=device, probe_size=128)
    return load_converted(_weights(weights, GAP_FILE), device=device)


def to_gap_demo(model: FcNet, width: int = GAP_WIDTH) -> GapConverted:
    """``camviz.convert.to_gap`` with the demo recipe's width (256: 2.7 x the trunk's 96
    channels; the paper added 1024 to VGG's 512).

    Example:
        >>> to_gap_demo(FcNet()).extra[0].out_channels
        256
    """
    return to_gap(model, width=width)


def _refuse(model: nn.Module) -> Any:
    raise NotAGapNetwork(
        f"{type(model).__name__}: `classifier` is a stack of fully connected layers (ReLU "
        "between them) over the flattened, pooled grid of `features`, not global average "
        "pooling followed by one linear layer, so no class map of it is exact. Convert it: "
        "camviz.to_gap(model) (the paper's VGGnet-GAP recipe), then camviz.fine_tune(...) or "
        "`camviz fine-tune --model demo-fc --to-gap`; the bundled result is "
        "camviz.load_model('demo-fc-gap')."
    )


register_adapter(FcNet, _refuse)


def fc_source(weights: Any = "DEFAULT") -> Source:
    """``load_source("demo-fc")``: the FC baseline as a plain module, to convert or fine-tune.

    Example:
        >>> fc_source(None).classes[:2]
        ['house', 'tree']
    """
    return Source(load_fcnet(weights), list(CLASSES), demo_transform())


def _rebuild(c: dict[str, Any]) -> FcNet:
    return FcNet(num_classes=int(c["num_classes"]), channels=tuple(int(v) for v in c["channels"]),
                 convs=tuple(int(v) for v in c["convs"]), hidden=int(c["hidden"]),
                 grid=int(c["grid"]), grid_pool=str(c["grid_pool"]), dropout=float(c["dropout"]))


register_converter(FcNet, Family("demo-fc", fc_stack_to_gap, describe=lambda m: dict(m.config),
                                 rebuild=_rebuild))
