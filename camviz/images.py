"""Image files in, network tensors out, and back to pixels for display.

Example:
    >>> from camviz.images import Preprocess
    >>> prep = Preprocess(resize=256, crop=224)
    >>> prep.crop
    (224, 224)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from camviz.errors import ImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
#: The whole view runs the network on the whole photo: longer / shorter side at most this.
MAX_ASPECT = 5.0
#: No resize makes an image of more pixels than this (a 40000 x 1 strip resized to a shorter
#: side of 256 would take gigabytes); 2**24 float RGB pixels are 192 MB.
MAX_PIXELS = 2**24
VIEWS = ("crop", "whole")
_ORIENTATION = 0x0112  # the EXIF orientation tag
_ORIENTATION_INFO = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")  # PIL reads

ImageLike = Any  # str | Path | PIL.Image.Image | np.ndarray | torch.Tensor


def _pair(v: int | Sequence[int] | None) -> tuple[int, int] | None:
    if v is None:
        return None
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def to_rgb(img: Image.Image, exif: bool = True) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB without clipping 16-bit data or dropping alpha badly.

    Transparent pixels are composited on white; 16- and 32-bit images are scaled, not clipped.
    ``exif``: turn the image upright by its EXIF orientation tag (photos); False keeps the
    stored frame (what box annotations and the WSOL reference use), and drops the tag so that
    no later reader (a transform, :func:`to_array`) turns it after all.

    Example:
        >>> to_rgb(Image.new("L", (4, 4))).mode
        'RGB'
    """
    if exif:
        img = ImageOps.exif_transpose(img)
    elif img.getexif().get(_ORIENTATION, 1) != 1:
        img = img.copy()  # a copy reads its orientation from info only: drop it there
        for key in _ORIENTATION_INFO:
            img.info.pop(key, None)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if img.mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        else:
            arr = arr / top * 255.0
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike[str], exif: bool = True) -> Image.Image:
    """Open an image file as 8-bit RGB, or raise :class:`ImageError` saying what is wrong.

    ``exif``: turn photos upright by their EXIF orientation (False: the stored frame, as
    annotations and the WSOL reference read it).

    Example:
        >>> load_image("missing.png")
        Traceback (most recent call last):
        ...
        camviz.errors.ImageError: image file not found: missing.png
    """
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image file not found: {p}")
    if not p.is_file():
        raise ImageError(f"not a file: {p} (give image files, or a folder to the command line)")
    try:
        with Image.open(p) as img:
            img.load()
            rgb = to_rgb(img, exif=exif)
    except (UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise ImageError(f"not a readable image: {p} ({err})") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"corrupt or truncated image: {p} ({err})") from err
    except Exception as err:  # a decoder's own failure on a malformed file (untrusted input)
        raise ImageError(f"corrupt image: {p} ({type(err).__name__}: {err})") from err
    if rgb.width < 1 or rgb.height < 1:
        raise ImageError(f"empty image: {p}")
    return rgb


def list_images(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image paths.

    Files are kept whatever their suffix (so a bad file is reported, not silently dropped);
    folders contribute files with an image suffix.

    Example:
        >>> list_images([])
        []
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise ImageError(f"no images in folder {p} (looked for {sorted(IMAGE_SUFFIXES)})")
            out.extend(found)
        else:
            out.append(p)
    return out


def to_array(img: ImageLike) -> np.ndarray:
    """Any image-like (path, PIL, HxW or HxWxC array) as uint8 RGB (H, W, 3).

    Example:
        >>> to_array(np.zeros((2, 3))).shape
        (2, 3, 3)
    """
    if isinstance(img, (str, os.PathLike)):
        img = load_image(img)
    if isinstance(img, Image.Image):
        return np.asarray(to_rgb(img))
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(f"expected an image array (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        return np.asarray(to_rgb(Image.fromarray(_as_uint8(arr), "RGBA")))
    return _as_uint8(arr)


def _as_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return np.rint(arr / 257.0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("image array contains NaN or infinity")
        if arr.min() < 0 or arr.max() > 1:
            raise ImageError("float image arrays must lie in [0, 1]")
        return np.rint(arr * 255).astype(np.uint8)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    raise ImageError(f"unsupported image array dtype {arr.dtype}")


@dataclass(frozen=True)
class Placement:
    """Where a network input lies in the image it was made from.

    ``size``: (H, W) of the original image. ``region``: (left, top, right, bottom) in the
    original's pixels, right and bottom exclusive (PIL's crop box): the part of the image the
    input shows, resized to the input's size (the whole image in the whole view; the centre
    crop's footprint otherwise). A map of the input resized to the region's size and pasted
    at (left, top) lies over the original image.

    Example:
        >>> Preprocess(resize=4, crop=4).placement(8, 16).region
        (4, 0, 12, 8)
    """

    size: tuple[int, int]
    region: tuple[int, int, int, int]

    @property
    def whole(self) -> bool:
        """Whether the input shows the whole image."""
        return self.region == (0, 0, self.size[1], self.size[0])

    @property
    def region_size(self) -> tuple[int, int]:
        """(H, W) of the region, in original pixels."""
        left, top, right, bottom = self.region
        return (bottom - top, right - left)


@dataclass(frozen=True)
class Preprocess:
    """Resize (shorter side), centre crop, scale to [0, 1] and normalise — invertible for display.

    ``resize`` is the shorter side (int) or an exact (H, W); ``crop`` a centre crop (H, W).
    Either may be None. ``fixed``: the network takes only ``output_size`` inputs (a ViT), so
    :meth:`whole` squashes the whole image to that size instead of keeping its aspect. Built
    from a torchvision weights transform with :meth:`from_torchvision`; :meth:`whole` gives
    the same preprocessing without the crop. No resize may make an image of over
    ``MAX_PIXELS``, and the whole view refuses images longer than ``MAX_ASPECT`` times their
    width (:class:`ImageError`).

    Example:
        >>> prep = Preprocess(resize=8, crop=None)
        >>> prep(Image.new("RGB", (16, 8))).shape
        torch.Size([3, 8, 16])
    """

    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    fixed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop", _pair(self.crop))
        if self.resize is not None and not isinstance(self.resize, int):
            object.__setattr__(self, "resize", _pair(self.resize))

    @classmethod
    def from_torchvision(cls, tf: Any) -> Preprocess:
        """Read sizes, mean, std and interpolation from torchvision's ImageClassification preset.

        Example:
            >>> from torchvision.models import ResNet18_Weights
            >>> Preprocess.from_torchvision(ResNet18_Weights.DEFAULT.transforms()).crop
            (224, 224)
        """
        resize = list(getattr(tf, "resize_size", []) or [])
        crop = list(getattr(tf, "crop_size", []) or [])
        interp = getattr(tf, "interpolation", "bilinear")
        return cls(
            resize=resize[0] if len(resize) == 1 else (tuple(resize) if resize else None),
            crop=tuple(crop) if crop else None,
            mean=tuple(float(m) for m in tf.mean),
            std=tuple(float(s) for s in tf.std),
            interpolation=getattr(interp, "value", str(interp)).lower(),
        )

    def whole(self) -> Preprocess:
        """The same preprocessing of the whole image, without the crop: the shorter side is
        resized as this transform does (so objects keep the scale the network learnt), the
        aspect kept; for a ``fixed``-size network the whole image is resized to that size.

        Example:
            >>> Preprocess(resize=256, crop=224).whole()(Image.new("RGB", (400, 300))).shape
            torch.Size([3, 256, 341])
        """
        if self.fixed and self.output_size is not None:
            return replace(self, resize=self.output_size, crop=None)
        if self.resize is None and self.crop is not None:
            return replace(self, resize=min(self.crop), crop=None)
        return replace(self, crop=None)

    def view(self, view: str) -> Preprocess:
        """This preprocessing for ``view`` "crop" (as it is) or "whole" (:meth:`whole`).

        Example:
            >>> Preprocess(resize=8, crop=8).view("whole").crop is None
            True
        """
        if view not in VIEWS:
            raise ImageError(f"view must be one of {VIEWS}, got {view!r}")
        return self.whole() if view == "whole" else self

    def _resized(self, h: int, w: int) -> tuple[int, int]:
        if self.resize is None:
            size = (h, w)
        elif isinstance(self.resize, int):
            s = self.resize
            size = (s, max(1, round(w * s / h))) if h <= w else (max(1, round(h * s / w)), s)
        else:
            size = self.resize
        if (isinstance(self.resize, int) and self.crop is None
                and max(h, w) > MAX_ASPECT * min(h, w)):
            raise ImageError(
                f"an image of {w}x{h} pixels is over {MAX_ASPECT:g} times longer than wide, too "
                "long to run whole: use the crop view (view='crop', --view crop) or crop it first"
            )
        if size[0] * size[1] > MAX_PIXELS and size != (h, w):
            raise ImageError(
                f"an image of {w}x{h} pixels would be resized to {size[1]}x{size[0]}, over "
                f"{MAX_PIXELS} pixels: crop it to a sensible shape first"
            )
        return size

    def placement(self, h: int, w: int) -> Placement:
        """Where the input made from an (h, w) image lies in it (see :class:`Placement`).

        Example:
            >>> Preprocess(resize=256, crop=224).placement(300, 400).region
            (68, 19, 331, 281)
        """
        rh, rw = self._resized(h, w)
        if self.crop is None:
            return Placement((h, w), (0, 0, w, h))
        ch, cw = self.crop
        top, left = int(round((rh - ch) / 2.0)), int(round((rw - cw) / 2.0))
        sy, sx = h / rh, w / rw
        return Placement((h, w), (round(left * sx), round(top * sy),
                                  round((left + cw) * sx), round((top + ch) * sy)))

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(H, W) of every output when fixed by the crop or an exact resize, else None."""
        if self.crop is not None:
            return self.crop
        return self.resize if isinstance(self.resize, tuple) else None

    def __call__(self, img: ImageLike) -> torch.Tensor:
        """Turn one image-like into a normalised float tensor (3, H, W)."""
        arr = to_array(img)
        x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).float().div_(255.0)
        return self.pixels(x)

    def pixels(self, x01: torch.Tensor) -> torch.Tensor:
        """Resize, crop and normalise a float (3, H, W) image with values in [0, 1].

        Example:
            >>> Preprocess(mean=(0, 0, 0), std=(2, 2, 2)).pixels(torch.ones(3, 2, 2))[0, 0, 0]
            tensor(0.5000)
        """
        x = self.geometry(x01)
        mean = torch.tensor(self.mean, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(3, 1, 1)
        return (x - mean) / std

    def geometry(self, x: torch.Tensor) -> torch.Tensor:
        """Apply only the resize and crop to a (C, H, W) float tensor."""
        h, w = x.shape[-2:]
        if self.resize is not None:
            size = self._resized(int(h), int(w))
            if size != (h, w):
                mode = "bicubic" if self.interpolation == "bicubic" else "bilinear"
                x = F.interpolate(
                    x[None], size=size, mode=mode, align_corners=False, antialias=True
                )[0].clamp_(0, 1)
        if self.crop is not None:
            ch, cw = self.crop
            h, w = x.shape[-2:]
            if ch > h or cw > w:
                raise ImageError(
                    f"image of {h}x{w} after resizing is smaller than the {ch}x{cw} crop"
                )
            top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
            x = x[..., top : top + ch, left : left + cw]
        return x

    def denormalize(self, x: torch.Tensor) -> np.ndarray:
        """Normalised tensor (3, H, W) or (B, 3, H, W) back to uint8 (H, W, 3) / (B, H, W, 3).

        Example:
            >>> prep = Preprocess()
            >>> prep.denormalize(prep(np.full((4, 4, 3), 200, np.uint8)))[0, 0].tolist()
            [200, 200, 200]
        """
        mean = torch.tensor(self.mean, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(3, 1, 1)
        pix = (x.float() * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
        return pix.movedim(-3, -1).cpu().numpy()


def to_batch(images: Any, transform: Preprocess | None = None) -> torch.Tensor:
    """Images as one normalised float32 batch (B, 3, H, W).

    ``images``: a float tensor (B, 3, H, W) or (3, H, W), already normalised (kept on its
    device); a uint8 tensor of pixels 0..255 (resized, cropped and normalised by
    ``transform``); or a list of file paths, PIL images or arrays (preprocessed by
    ``transform``, default :class:`Preprocess`). Other dtypes, NaN or infinity, and images of
    different sizes raise :class:`ImageError` saying what to do.

    Example:
        >>> to_batch(torch.full((3, 2, 2), 255, dtype=torch.uint8),
        ...          Preprocess(mean=(0, 0, 0), std=(1, 1, 1))).flatten().tolist()[:2]
        [1.0, 1.0]
    """
    return to_batch_placed(images, transform)[0]


def to_batch_placed(
    images: Any, transform: Preprocess | None = None
) -> tuple[torch.Tensor, list[Placement] | None]:
    """:func:`to_batch`, with the :class:`Placement` of each input in its original image (None
    for a float tensor, which is the network input already).

    Example:
        >>> x, places = to_batch_placed([np.zeros((30, 40, 3), np.uint8)], Preprocess(resize=15))
        >>> tuple(x.shape), places[0].size, places[0].whole
        ((1, 3, 15, 20), (30, 40), True)
    """
    prep = transform or Preprocess()
    if isinstance(images, torch.Tensor):
        x = images[None] if images.ndim == 3 else images
        places = ([prep.placement(int(x.shape[-2]), int(x.shape[-1]))] * x.shape[0]
                  if x.dtype == torch.uint8 and x.ndim == 4 else None)
        return _tensor_batch(images, transform), places
    if not isinstance(images, (list, tuple)):
        images = [images]
    if not images:
        raise ImageError("no images given")
    arrays = [to_array(img) for img in images]
    places = [prep.placement(a.shape[0], a.shape[1]) for a in arrays]
    return _stack([prep(a) for a in arrays]), places


def _tensor_batch(x: torch.Tensor, transform: Preprocess | None) -> torch.Tensor:
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[1] != 3:
        raise ImageError(f"expected a (B, 3, H, W) or (3, H, W) tensor, got {tuple(x.shape)}")
    if x.dtype == torch.uint8:  # pixels, as a PIL image would give them
        prep = transform or Preprocess()
        return _stack([prep.pixels(img.float() / 255.0) for img in x])
    if not x.is_floating_point():
        raise ImageError(
            f"a {x.dtype} tensor is not an image batch: give a float tensor normalised like the "
            "network's transform, uint8 pixels (0..255), or PIL images / paths"
        )
    x = x.float()
    # min and max propagate NaN, so both are finite iff every value is: one pass, no bool copy
    if x.numel() and not all(bool(torch.isfinite(v)) for v in torch.aminmax(x)):
        raise ImageError("the input tensor contains NaN or infinity; replace those values first")
    return x


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    sizes = {tuple(t.shape[-2:]) for t in tensors}
    if len(sizes) > 1:
        raise ImageError(
            f"images of different sizes {sorted(sizes)} cannot form one batch: run them one by "
            "one (the whole view keeps each photo's shape), group them by size, or give the "
            "network a transform with a crop or exact resize (view='crop')"
        )
    return torch.stack(tensors)
