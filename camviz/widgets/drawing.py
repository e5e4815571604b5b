"""What the browser draws, as plain numbers: outlines, box paths, display maps, colour scales.

numpy, torch, PIL and scikit-image only (no ipywidgets, no plotly), so a frame of the view model
can be drawn by the FigureWidget, by a static plotly figure or by PIL alike.

Example:
    >>> box_path([0, 0, 1, 1])
    ([-0.5, 1.5, 1.5, -0.5, -0.5], [-0.5, -0.5, 1.5, 1.5, -0.5])
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.measure import find_contours

from camviz.render import colormap_lut

__all__ = ["TILE", "DISPLAY_CELLS", "colorscale", "mask_outline", "box_path", "display_map",
           "png", "jpeg", "data_uri"]

#: Side of a unit tile (and of the thumbnail the tiles are drawn on), in pixels.
TILE = 96
#: The heatmap goes to the page as block means of the full-resolution map, at most this many
#: cells on the long side, drawn with bilinear smoothing. plotly sends 2-d arrays as nested JSON
#: lists, whose walk was the largest part of a redraw (224 x 224: 11 ms per update, 112 x 112:
#: 2 ms in Python alone); the map is smooth anyway (bilinear from h x w feature cells). Mask
#: and box are computed on the full-resolution map.
DISPLAY_CELLS = 64


def colorscale(name: str, stops: int = 32) -> list[list[Any]]:
    """A plotly colour scale sampled from camviz's colour map LUT (same colours as exports).

    Example:
        >>> colorscale("gray", stops=2)
        [[0.0, 'rgb(0,0,0)'], [1.0, 'rgb(255,255,255)']]
    """
    lut = colormap_lut(name)
    pos = np.linspace(0.0, 1.0, stops)
    idx = np.rint(pos * 255).astype(int)
    return [[float(p), "rgb({},{},{})".format(*lut[i].tolist())]
            for p, i in zip(pos, idx, strict=True)]


def mask_outline(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boundary polylines of a boolean mask (H, W) in pixel coordinates, NaN between pieces.

    Points lie half-way between a foreground pixel and its background neighbour
    (scikit-image's marching squares at level 0.5), so the line encloses exactly the mask.

    Example:
        >>> m = np.zeros((4, 4), bool); m[1:3, 1:3] = True
        >>> xs, ys = mask_outline(m)
        >>> float(np.nanmin(xs)), float(np.nanmax(xs))
        (0.5, 2.5)
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return np.zeros(0), np.zeros(0)
    padded = np.pad(m, 1).astype(np.float32)  # closes contours that touch the border
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for c in find_contours(padded, 0.5):
        ys.extend([c[:, 0] - 1, np.array([np.nan])])
        xs.extend([c[:, 1] - 1, np.array([np.nan])])
    return np.concatenate(xs[:-1]), np.concatenate(ys[:-1])


def box_path(box: Sequence[int] | None) -> tuple[list[float], list[float]]:
    """Closed outline of an inclusive pixel box (x0, y0, x1, y1), drawn around its pixels.

    Example:
        >>> box_path([2, 1, 4, 3])
        ([1.5, 4.5, 4.5, 1.5, 1.5], [0.5, 0.5, 3.5, 3.5, 0.5])
    """
    if box is None:
        return [], []
    x0, y0, x1, y1 = (float(v) for v in box)
    a0, a1, b0, b1 = x0 - 0.5, x1 + 0.5, y0 - 0.5, y1 + 0.5
    return [a0, a1, a1, a0, a0], [b0, b0, b1, b1, b0]


def display_map(cam01: np.ndarray, cells: int = DISPLAY_CELLS) -> tuple[np.ndarray, int]:
    """Block means of a map so its long side has at most ``cells`` cells; and the block size.

    Block ``(i, j)`` covers pixels ``[i*s, (i+1)*s) x [j*s, (j+1)*s)`` (a partial last block
    averages the pixels it has), so it is drawn centred at ``j*s + (s-1)/2``.

    Example:
        >>> z, s = display_map(np.arange(16, dtype=np.float32).reshape(4, 4), cells=2)
        >>> s, z.tolist()
        (2, [[2.5, 4.5], [10.5, 12.5]])
    """
    m = np.asarray(cam01, dtype=np.float32)
    s = max(1, -(-max(m.shape) // int(cells)))
    if s == 1:
        return m, 1
    t = torch.from_numpy(np.ascontiguousarray(m))[None, None]
    z = F.avg_pool2d(t, kernel_size=s, stride=s, ceil_mode=True)[0, 0]
    return z.numpy(), s


def png(arr: np.ndarray) -> bytes:
    """A uint8 image (H, W[, 3]) as PNG bytes (fast compression; for lossless panels).

    Example:
        >>> png(np.zeros((2, 2, 3), np.uint8))[:4]
        b'\\x89PNG'
    """
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def jpeg(arr: np.ndarray) -> bytes:
    """A uint8 image as JPEG bytes (quality 92).

    Pictures for the page go as JPEG: 0.4 ms for 224 x 224 where PNG took 9 ms. Exports stay
    lossless (PNG/SVG/PDF).

    Example:
        >>> jpeg(np.zeros((2, 2, 3), np.uint8))[:2]
        b'\\xff\\xd8'
    """
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def data_uri(arr: np.ndarray) -> str:
    """A uint8 image as a JPEG data URI (what plotly's Image trace takes as ``source``).

    Example:
        >>> data_uri(np.zeros((2, 2, 3), np.uint8))[:23]
        'data:image/jpeg;base64,'
    """
    return "data:image/jpeg;base64," + base64.b64encode(jpeg(arr)).decode("ascii")
