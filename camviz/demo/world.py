"""The demo world's generator: objects made of shared parts on cluttered, textured backgrounds.

Every image is drawn from its own numpy ``Generator`` seeded by (world seed, split, index), so an
image depends only on those three numbers: splits never share an image and any subset can be drawn
in parallel, in any order, with identical results.

Two class sets share the part vocabulary: ``"base"`` (the 9 classes the demo nets are trained on)
and ``"novel"`` (4 arrangements that no base class uses, for heads fitted on the frozen trunk,
:func:`camviz.fit_head`). A novel image's seed also carries the set, so its images never equal a
base image; the base set's images are exactly those of world version 2.

Example:
    >>> s = render_sample("test", 0)
    >>> s.image.shape, s.image.dtype, CLASSES[s.label] in CLASSES
    ((128, 128, 3), dtype('uint8'), True)
    >>> bool(s.mask[s.box[1], s.box[0]:s.box[2] + 1].any())
    True
"""

from __future__ import annotations

import colorsys
import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

IMAGE_SIZE = 128
WORLD_SEED = 20161
WORLD_VERSION = 2  # bump when a change alters any generated pixel

# The shared part vocabulary. Every class is an arrangement of two or three of these, and every
# part type is used by at least two classes, so no single part gives the class away.
PARTS: tuple[str, ...] = ("disc", "ring", "square", "triangle", "bar", "cross")

# Part placements in the object's own frame ([-1, 1]^2, y down): (part, x, y, half-w, half-h).
Layout = tuple[tuple[str, float, float, float, float], ...]
_LAYOUTS: dict[str, Layout] = {
    "house": (("triangle", 0.0, -0.50, 0.78, 0.45), ("square", 0.0, 0.45, 0.60, 0.50)),
    "tree": (("triangle", 0.0, -0.35, 0.70, 0.60), ("bar", 0.0, 0.62, 0.15, 0.38)),
    "sign": (("square", 0.0, -0.45, 0.62, 0.45), ("bar", 0.0, 0.50, 0.13, 0.50)),
    "lollipop": (("disc", 0.0, -0.42, 0.55, 0.55), ("bar", 0.0, 0.55, 0.13, 0.45)),
    "snowman": (("disc", 0.0, -0.58, 0.40, 0.40), ("disc", 0.0, 0.35, 0.62, 0.62)),
    "cart": (
        ("square", 0.0, -0.25, 0.90, 0.45),
        ("ring", -0.52, 0.58, 0.38, 0.38),
        ("ring", 0.52, 0.58, 0.38, 0.38),
    ),
    "key": (("ring", -0.58, 0.0, 0.42, 0.42), ("bar", 0.35, 0.0, 0.62, 0.13)),
    "sword": (("cross", -0.60, 0.0, 0.40, 0.40), ("bar", 0.35, 0.0, 0.62, 0.12)),
    "chapel": (("cross", 0.0, -0.58, 0.40, 0.40), ("square", 0.0, 0.40, 0.62, 0.56)),
}
CLASSES: tuple[str, ...] = tuple(_LAYOUTS)

# New arrangements of the same parts, never seen in training: no base class puts two discs or two
# rings side by side on a bar, or stacks two squares or two triangles.
_NOVEL_LAYOUTS: dict[str, Layout] = {
    "dumbbell": (
        ("disc", -0.62, 0.0, 0.36, 0.36),
        ("bar", 0.0, 0.0, 0.40, 0.11),
        ("disc", 0.62, 0.0, 0.36, 0.36),
    ),
    "glasses": (
        ("ring", -0.52, 0.0, 0.42, 0.42),
        ("bar", 0.0, -0.08, 0.18, 0.08),
        ("ring", 0.52, 0.0, 0.42, 0.42),
    ),
    "robot": (("square", 0.0, -0.56, 0.36, 0.34), ("square", 0.0, 0.36, 0.66, 0.56)),
    "pine": (("triangle", 0.0, -0.50, 0.55, 0.42), ("triangle", 0.0, 0.34, 0.82, 0.56)),
}
NOVEL_CLASSES: tuple[str, ...] = tuple(_NOVEL_LAYOUTS)
#: The class sets of the world: name -> (layouts, number mixed into the seed; 0 keeps v2 seeds).
CLASS_SETS: dict[str, tuple[dict[str, Layout], int]] = {
    "base": (_LAYOUTS, 0),
    "novel": (_NOVEL_LAYOUTS, 1),
}

MAX_ROTATION = 30.0  # degrees; beyond this "above" and "left of" would stop meaning anything
SCALE_RANGE = (0.15, 0.60)  # longer side of the object's box, as a fraction of the image side
TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel", "moon", "camera", "coins")


@dataclass
class Sample:
    """One generated image and its ground truth.

    ``box`` is (x0, y0, x1, y1), inclusive, the bounding box of ``mask``. ``parts`` maps each part
    type of the object to the mask of its visible pixels (instances of one type merged);
    ``distractors`` lists (part type, mask) of stray parts that are not the object.
    """

    image: np.ndarray  # uint8 (H, W, 3)
    label: int
    mask: np.ndarray  # bool (H, W)
    box: tuple[int, int, int, int]
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    distractors: list[tuple[str, np.ndarray]] = field(default_factory=list)
    classes: tuple[str, ...] = CLASSES  # the names of the class set ``label`` indexes

    @property
    def class_name(self) -> str:
        return self.classes[self.label]


def class_names(classes: str = "base") -> tuple[str, ...]:
    """The class names of a class set ("base" or "novel").

    Example:
        >>> class_names("novel")
        ('dumbbell', 'glasses', 'robot', 'pine')
    """
    return tuple(_class_set(classes)[0])


def _class_set(classes: str) -> tuple[dict[str, Layout], int]:
    if classes not in CLASS_SETS:
        raise ValueError(f"unknown class set {classes!r}; use one of {sorted(CLASS_SETS)}")
    return CLASS_SETS[classes]


def split_seed(
    split: str, index: int, seed: int = WORLD_SEED, class_set: int = 0
) -> np.random.SeedSequence:
    """The seed of one image: distinct for every (seed, split, index, class set number).

    Example:
        >>> split_seed("train", 3).entropy == split_seed("test", 3).entropy
        False
    """
    if index < 0:
        raise ValueError(f"image index must be >= 0, got {index}")
    code = zlib.crc32(split.encode("utf-8"))
    entropy = [seed, code, int(index)] + ([int(class_set)] if class_set else [])
    return np.random.SeedSequence(entropy)


# ---------------------------------------------------------------------------------------------
# Part shapes as polygons (unit frame), rasterised with scikit-image.


def _circle(r: float, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _shape_polys(kind: str, w: float, h: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(filled polygons, holes) of a part with half-sizes (w, h), centred at 0, y down."""
    if kind == "disc":
        return [_circle(1.0) * [w, h]], []
    if kind == "ring":
        return [_circle(1.0) * [w, h]], [_circle(0.5) * [w, h]]
    if kind in ("square", "bar"):
        return [np.array([[-w, -h], [w, -h], [w, h], [-w, h]])], []
    if kind == "triangle":
        return [np.array([[0.0, -h], [w, h], [-w, h]])], []
    if kind == "cross":
        a = 0.34  # half-thickness of an arm, as a fraction of the half-size
        pts = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a),
               (-1, a), (-1, -a), (-a, -a)]
        return [np.array(pts, dtype=float) * [w, h]], []
    raise ValueError(f"unknown part {kind!r}; parts are {PARTS}")


def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _raster(polys: list[np.ndarray], holes: list[np.ndarray], size: int) -> np.ndarray:
    from skimage.draw import polygon

    m = np.zeros((size, size), dtype=bool)
    for p in polys:
        rr, cc = polygon(p[:, 1], p[:, 0], shape=(size, size))
        m[rr, cc] = True
    for p in holes:
        rr, cc = polygon(p[:, 1], p[:, 0], shape=(size, size))
        m[rr, cc] = False
    return m


# ---------------------------------------------------------------------------------------------
# Colours and backgrounds.


def _colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]):
    h = rng.uniform(0, 1)
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val)), dtype=np.float32)


@lru_cache(maxsize=1)
def _textures() -> tuple[np.ndarray, ...]:
    """Grey textures from scikit-image's bundled data (no download), in [0, 1], at 3 zooms."""
    import skimage.data
    from skimage.transform import rescale

    out = []
    for name in TEXTURES:
        img = getattr(skimage.data, name)().astype(np.float32) / 255.0
        for zoom in (0.5, 0.8):
            t = rescale(img, zoom, anti_aliasing=True, order=1)
            if min(t.shape) >= IMAGE_SIZE:
                out.append(np.ascontiguousarray(t, dtype=np.float32))
    return tuple(out)


def _part_colour(rng: np.random.Generator, under: np.ndarray, min_dist: float = 0.3) -> np.ndarray:
    """A saturated colour that stands out from ``under`` (the pixels it will cover), so that
    every part is visible: the most distant of up to 12 draws, stopping at ``min_dist``."""
    ref = under.reshape(-1, 3).mean(0) if under.size else np.full(3, 0.5, np.float32)
    best, best_d = None, -1.0
    for _ in range(12):
        c = _colour(rng, (0.45, 1.0), (0.45, 1.0))
        d = float(np.linalg.norm(c - ref))
        if d > best_d:
            best, best_d = c, d
        if d >= min_dist:
            break
    return best


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    texs = _textures()
    t = texs[rng.integers(len(texs))]
    y = rng.integers(0, t.shape[0] - size + 1)
    x = rng.integers(0, t.shape[1] - size + 1)
    g = t[y : y + size, x : x + size]
    g = np.rot90(g, rng.integers(4))
    lo, hi = np.percentile(g, (2, 98))
    g = np.clip((g - lo) / max(hi - lo, 1e-3), 0, 1)
    c0 = _colour(rng, (0.0, 0.7), (0.15, 0.9))
    c1 = _colour(rng, (0.0, 0.7), (0.15, 0.9))
    amp = rng.uniform(0.2, 0.55)  # contrast of the texture
    mix = 0.5 + amp * (g - 0.5)
    return c0[None, None] * (1 - mix[..., None]) + c1[None, None] * mix[..., None]


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Strokes and blobs that are none of the parts, drawn under everything else."""
    from skimage.draw import ellipse, line_aa

    size = img.shape[0]
    for _ in range(rng.integers(2, 7)):
        r0, c0, r1, c1 = rng.integers(0, size, 4)
        rr, cc, val = line_aa(r0, c0, r1, c1)
        keep = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        col = _colour(rng, (0.0, 1.0), (0.1, 1.0))
        v = val[keep, None].astype(np.float32)
        img[rr[keep], cc[keep]] = img[rr[keep], cc[keep]] * (1 - v) + col * v
    for _ in range(rng.integers(0, 5)):
        rr, cc = ellipse(
            rng.uniform(0, size), rng.uniform(0, size), rng.uniform(1.5, 5), rng.uniform(1.5, 5),
            shape=(size, size), rotation=rng.uniform(0, np.pi),
        )
        img[rr, cc] = _colour(rng, (0.0, 1.0), (0.1, 1.0))


# ---------------------------------------------------------------------------------------------
# The object.


def _place(
    layout: Layout, rng: np.random.Generator, size: int,
) -> list[tuple[str, list[np.ndarray], list[np.ndarray]]]:
    """Pixel polygons of each part of one object, scaled, rotated and placed in the image."""
    theta = np.deg2rad(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    aspect = rng.uniform(0.85, 1.15)
    rot = _rot(theta)
    parts = []
    for kind, x, y, w, h in layout:
        jx, jy = rng.uniform(-0.04, 0.04, 2)
        js = rng.uniform(0.9, 1.1)
        polys, holes = _shape_polys(kind, w * js, h * js)
        centre = np.array([x + jx, y + jy])
        polys = [(p + centre) * [aspect, 1 / aspect] @ rot.T for p in polys]
        holes = [(p + centre) * [aspect, 1 / aspect] @ rot.T for p in holes]
        parts.append((kind, polys, holes))
    pts = np.concatenate([p for _, polys, _ in parts for p in polys])
    lo, hi = pts.min(0), pts.max(0)
    frac = rng.uniform(*SCALE_RANGE)
    scale = frac * size / float((hi - lo).max())
    ext = (hi - lo) * scale
    off = np.array([rng.uniform(0, size - 1 - e) for e in ext]) - lo * scale
    return [
        (k, [p * scale + off for p in polys], [p * scale + off for p in holes])
        for k, polys, holes in parts
    ]


def _box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _distractors(
    rng: np.random.Generator, size: int, box: tuple[int, int, int, int], part_px: float,
    n: int,
) -> list[tuple[str, np.ndarray]]:
    """Up to ``n`` stray parts, each clear of the object's box and of each other."""
    out: list[tuple[str, np.ndarray]] = []
    taken = [box]
    margin = 4
    for _ in range(n):
        for _attempt in range(25):
            kind = PARTS[rng.integers(len(PARTS))]
            r = part_px * rng.uniform(0.6, 1.3)
            if kind == "bar":
                w, h = r * 0.25, r
            else:
                w = h = r
            polys, holes = _shape_polys(kind, w, h)
            rot = _rot(rng.uniform(0, 2 * np.pi))
            cx, cy = rng.uniform(0, size, 2)
            polys = [p @ rot.T + [cx, cy] for p in polys]
            holes = [p @ rot.T + [cx, cy] for p in holes]
            pts = np.concatenate(polys)
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            if x0 < 0 or y0 < 0 or x1 > size - 1 or y1 > size - 1:
                continue
            clear = all(
                x1 + margin < bx0 or x0 - margin > bx1 or y1 + margin < by0 or y0 - margin > by1
                for bx0, by0, bx1, by1 in taken
            )
            if not clear:
                continue
            m = _raster(polys, holes, size)
            if m.sum() < 6:
                continue
            out.append((kind, m))
            taken.append((x0, y0, x1, y1))
            break
    return out


def render_sample(
    split: str, index: int, seed: int = WORLD_SEED, label: int | None = None,
    size: int = IMAGE_SIZE, classes: str = "base",
) -> Sample:
    """Draw image ``index`` of ``split``: always the same pixels for the same arguments.

    ``label`` forces the class (otherwise drawn uniformly); ``classes`` is the class set
    ("base", or "novel": :data:`NOVEL_CLASSES`, drawn from seeds of their own).

    Example:
        >>> a, b = render_sample("val", 7), render_sample("val", 7)
        >>> bool((a.image == b.image).all()) and a.label == b.label
        True
        >>> render_sample("val", 7, classes="novel", label=2).class_name
        'robot'
    """
    layouts, set_code = _class_set(classes)
    names = tuple(layouts)
    rng = np.random.default_rng(split_seed(split, index, seed, set_code))
    y = int(rng.integers(len(names))) if label is None else int(label)
    if not 0 <= y < len(names):
        raise ValueError(f"label must be in [0, {len(names)}), got {label}")
    img = _background(rng, size)
    _clutter(rng, img)

    placed = _place(layouts[names[y]], rng, size)
    obj = np.zeros((size, size), dtype=bool)
    part_masks: list[tuple[str, np.ndarray]] = []
    obj_drawn = np.zeros((size, size), dtype=bool)
    for kind, polys, holes in placed:
        m = _raster(polys, holes, size)
        part_masks.append((kind, m))
        obj |= m
    if not obj.any():  # cannot happen at >= 15% of the side, but never write an empty box
        raise RuntimeError(f"empty object in {split}/{index}")
    box = _box_of(obj)
    part_px = np.sqrt(obj.sum() / max(len(placed), 1)) / 1.6

    n_distr = int(rng.integers(1, 4))
    distr = _distractors(rng, size, box, part_px, n_distr)

    for _kind, m in distr:
        img[m] = _part_colour(rng, img[m])
    # Later parts occlude earlier ones; a part's mask is what stays visible of it.
    visible: dict[str, np.ndarray] = {}
    drawn = np.zeros_like(obj)
    for kind, m in reversed(part_masks):
        vis = m & ~drawn
        drawn |= m
        visible[kind] = visible.get(kind, np.zeros_like(obj)) | vis
    for _kind, m in part_masks:
        img[m] = _part_colour(rng, img[m & ~obj_drawn])
        obj_drawn |= m
    img += rng.normal(0.0, 0.025, img.shape).astype(img.dtype)
    image = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    parts = {k: visible[k] for k in dict.fromkeys(k for k, _ in part_masks)}
    return Sample(image=image, label=y, mask=obj, box=box, parts=parts, distractors=distr,
                  classes=names)
