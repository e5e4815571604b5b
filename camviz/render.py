"""Pixels for people: colour maps, overlays, outlines, boxes and panels (numpy and PIL only).

Example:
    >>> import numpy as np
    >>> img = np.zeros((8, 8, 3), np.uint8)
    >>> overlay(img, np.linspace(0, 1, 64).reshape(8, 8)).shape
    (8, 8, 3)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from camviz.errors import CamvizError

COLORMAPS = ("jet", "viridis", "inferno", "magma", "plasma", "turbo", "hot", "gray")


def _to_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().float().cpu().numpy()
    return np.asarray(a)


@lru_cache(maxsize=32)
def colormap_lut(name: str = "jet") -> np.ndarray:
    """A (256, 3) uint8 lookup table for a named colour map (plotly's colour scales).

    Example:
        >>> colormap_lut("gray")[[0, 255]].tolist()
        [[0, 0, 0], [255, 255, 255]]
    """
    import plotly.colors as pc

    if name == "gray":
        ramp = np.arange(256, dtype=np.uint8)
        return np.stack([ramp] * 3, axis=1)
    try:
        scale = pc.get_colorscale(name)
    except Exception as err:
        raise CamvizError(f"unknown colour map {name!r}; try one of {COLORMAPS}") from err
    colors = pc.sample_colorscale(scale, list(np.linspace(0, 1, 256)), colortype="rgb")
    rgb = [tuple(float(v) for v in re.findall(r"[\d.]+", c)[:3]) for c in colors]
    return np.clip(np.rint(np.array(rgb)), 0, 255).astype(np.uint8)


def colormap(map01: Any, name: str = "jet") -> np.ndarray:
    """Colour a map with values in [0, 1] (H, W) into uint8 RGB (H, W, 3). NaN shows as 0.

    Example:
        >>> colormap(np.array([[0.0, 1.0]]), "gray").tolist()
        [[[0, 0, 0], [255, 255, 255]]]
    """
    m = np.nan_to_num(_to_numpy(map01).astype(np.float64), nan=0.0)
    idx = np.clip(np.rint(m * 255), 0, 255).astype(np.uint8)
    return colormap_lut(name)[idx]


def resize_map(map_: Any, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a (h, w) map to (H, W) (torch, align_corners=False), as float32.

    Example:
        >>> resize_map(np.ones((2, 2)), (4, 4)).shape
        (4, 4)
    """
    t = torch.as_tensor(_to_numpy(map_), dtype=torch.float32)
    if tuple(t.shape) == tuple(size):
        return t.numpy()
    out = torch.nn.functional.interpolate(
        t[None, None], size=size, mode="bilinear", align_corners=False
    )
    return out[0, 0].numpy()


def overlay(image: Any, map01: Any, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a coloured map over an RGB image: (1 - alpha) * image + alpha * colour(map).

    The map is resized to the image when their sizes differ.

    Example:
        >>> overlay(np.full((2, 2, 3), 200, np.uint8), np.zeros((2, 2)), alpha=0.0)[0, 0].tolist()
        [200, 200, 200]
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    m = _to_numpy(map01)
    if m.shape != img.shape[:2]:
        m = resize_map(m, img.shape[:2])
    if not 0.0 <= alpha <= 1.0:
        raise CamvizError(f"alpha must lie in [0, 1], got {alpha}")
    col = colormap(m, cmap).astype(np.float32)
    out = (1.0 - alpha) * img.astype(np.float32) + alpha * col
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def outline(
    image: Any, mask: Any, color: Sequence[int] = (255, 255, 0), width: int = 1
) -> np.ndarray:
    """Draw the boundary of a boolean mask on an image (scikit-image's find_boundaries).

    Example:
        >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True
        >>> int((outline(np.zeros((5, 5, 3), np.uint8), m)[..., 0] == 255).sum())
        8
    """
    from skimage.morphology import erosion, footprint_rectangle
    from skimage.segmentation import find_boundaries

    img = np.array(image, dtype=np.uint8, copy=True)
    msk = _to_numpy(mask).astype(bool)
    edge = find_boundaries(msk, mode="inner")
    if width > 1:
        side = 2 * width + 1
        edge = msk & ~erosion(msk, footprint_rectangle((side, side)))
    img[edge] = np.asarray(color, dtype=np.uint8)
    return img


def dim_outside(image: Any, mask: Any, keep: float = 0.2) -> np.ndarray:
    """Dim pixels outside a mask (NetDissect: image * (keep + (1 - keep) * mask)).

    Example:
        >>> out = dim_outside(np.full((1, 2, 3), 100, np.uint8), np.array([[True, False]]))
        >>> out[0, :, 0].tolist()
        [100, 20]
    """
    img = np.asarray(image).astype(np.float32)
    msk = _to_numpy(mask).astype(np.float32)[..., None]
    out = img * (keep + (1.0 - keep) * msk)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_boxes(
    image: Any,
    boxes: Any,
    color: Sequence[int] = (0, 255, 0),
    width: int = 2,
) -> np.ndarray:
    """Draw inclusive pixel boxes (x0, y0, x1, y1) on an image; boxes outside are clipped.

    Example:
        >>> img = draw_boxes(np.zeros((6, 6, 3), np.uint8), [[1, 1, 4, 4]], width=1)
        >>> int(img[1, 1, 1]), int(img[2, 2, 1])
        (255, 0)
    """
    img = np.array(image, dtype=np.uint8, copy=True)
    h, w = img.shape[:2]
    col = np.asarray(color, dtype=np.uint8)
    for x0, y0, x1, y1 in _to_numpy(boxes).reshape(-1, 4).astype(int).tolist():
        if x1 < x0 or y1 < y0:
            continue
        for t in range(width):
            a0, b0, a1, b1 = x0 + t, y0 + t, x1 - t, y1 - t
            if a1 < a0 or b1 < b0:
                break
            ys = slice(max(b0, 0), min(b1, h - 1) + 1)
            xs = slice(max(a0, 0), min(a1, w - 1) + 1)
            for y in (b0, b1):
                if 0 <= y < h:
                    img[y, xs] = col
            for x in (a0, a1):
                if 0 <= x < w:
                    img[ys, x] = col
    return img


def font(size: int) -> ImageFont.ImageFont:
    """PIL's default font at ``size`` pixels (its bitmap font on Pillow < 10.1).

    Example:
        >>> font(12) is not None
        True
    """
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def grid(
    images: Sequence[Any],
    labels: Sequence[str] | None = None,
    cols: int | None = None,
    pad: int = 4,
    label_height: int = 16,
    background: Sequence[int] = (255, 255, 255),
) -> Image.Image:
    """Tile images (uint8 H x W x 3, all the same size) into a PIL panel with optional captions.

    Example:
        >>> grid([np.zeros((4, 4, 3), np.uint8)] * 3, ["a", "b", "c"], cols=3).size
        (28, 28)
    """
    if not images:
        raise CamvizError("grid() needs at least one image")
    arrs = [np.asarray(im) for im in images]
    h, w = arrs[0].shape[:2]
    if any(a.shape[:2] != (h, w) for a in arrs):
        arrs = [np.asarray(Image.fromarray(a).resize((w, h))) for a in arrs]
    n = len(arrs)
    cols = cols or n
    rows = (n + cols - 1) // cols
    lh = label_height if labels else 0
    panel = Image.new(
        "RGB", (cols * (w + pad) + pad, rows * (h + pad + lh) + pad), tuple(background)
    )
    draw = ImageDraw.Draw(panel)
    fnt = font(max(8, lh - 4)) if lh else None
    for i, a in enumerate(arrs):
        r, c = divmod(i, cols)
        x, y = pad + c * (w + pad), pad + r * (h + pad + lh)
        panel.paste(Image.fromarray(a.astype(np.uint8)), (x, y + lh))
        if labels:
            text = str(labels[i])
            while len(text) > 3 and draw.textlength(text, font=fnt) > w:
                text = text[:-2] + "…"
            draw.text((x, y), text, fill=(0, 0, 0), font=fnt)
    return panel
