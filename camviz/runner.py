"""The ``camviz run`` job: class maps of image files written into an output folder.

For each image: overlays of its top-k class maps (PNG, plus one panel) and one JSON Lines record
in ``OUT/results.jsonl``. A bad file is recorded as an error and skipped; a rerun skips finished
images and redoes edited ones (their old record and files go); nothing is written outside
``OUT``; every file is written atomically.

The folder's bookkeeping (what it is bound to, what is done) is :mod:`camviz.runfolder`.

Example:
    >>> sorted(PHOTOS)[:2]
    ['astronaut', 'chelsea']
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from camviz.errors import CamvizError, ImageError, MissingExtra
from camviz.files import save_image
from camviz.galleries import units_on_image
from camviz.gapnet import GapNet
from camviz.images import load_image
from camviz.localize import paper_boxes
from camviz.render import draw_boxes, grid, overlay
from camviz.result import CamResult
from camviz.runfolder import (
    MANIFEST,
    RESULTS,
    RunLog,
    bind_folder,
    image_key,
    list_inputs,
    prepare_out,
    run_config,
    safe_name,
    source_of,
)

__all__ = ["MANIFEST", "PHOTOS", "RESULTS", "photo_overlay", "photo_units", "run_demo",
           "run_images", "safe_name", "write_photos"]


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def run_images(
    net: GapNet,
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    topk: int = 5,
    batch_size: int = 16,
    alpha: float = 0.5,
    cmap: str = "jet",
    retry_errors: bool = False,
    progress: bool = True,
    view: str = "whole",
) -> dict[str, int]:
    """The ``camviz run`` job as a function; returns counts of done, skipped and failed images.

    ``view``: "whole" runs each whole photo (the shorter side resized as the network's
    transform does, no crop; photos of one size share a pass) and "crop" the transform as it
    is (a centre crop). Either way the overlays are drawn over the photo at its own
    resolution (in the crop view, the part the network did not see is greyed) and the JSON
    boxes are in the photo's own pixels.

    Example:
        >>> run_images(net, ["photos/"], "out/photos")  # doctest: +SKIP
        {'done': 12, 'skipped': 0, 'failed': 1}
    """
    from tqdm.auto import tqdm

    if topk < 1 or batch_size < 1:
        raise CamvizError(f"topk and batch_size must be at least 1, got {topk} and {batch_size}")
    if view not in ("whole", "crop"):
        raise CamvizError(f"view must be 'whole' or 'crop', got {view!r}")
    paths = list_inputs(inputs, Path(out))  # before anything is written
    out_dir = prepare_out(out)
    bind_folder(out_dir, run_config(net, topk=topk, alpha=alpha, cmap=cmap, view=view))
    log = RunLog(out_dir / RESULTS)
    log.compact()  # what a killed run superseded but had not cleaned up yet
    todo = [p for p in paths if not log.done(source_of(p), retry_errors)]
    counts = {"done": 0, "skipped": len(paths) - len(todo), "failed": 0}
    bar = tqdm(total=len(todo), desc="camviz run", unit="img", disable=not progress)

    def fail(p: Path, err: ImageError) -> None:
        log.append({"image": str(p), "source": source_of(p), "key": image_key(p),
                    "status": "error", "error": str(err)})
        counts["failed"] += 1
        bar.update(1)

    for chunk in _batches(todo, batch_size):
        ok: list[tuple[Path, Image.Image]] = []
        for p in chunk:
            try:
                ok.append((p, load_image(p)))
            except ImageError as err:
                fail(p, err)
        for p, img, res, i in _passes(net, ok, view, fail):
            _write_one(res, i, p, out_dir, topk, alpha, cmap, log.append, img)
            counts["done"] += 1
            bar.update(1)
    bar.close()
    log.compact()  # the records this run superseded: their lines and files go
    return counts


def _passes(
    net: GapNet, items: list[tuple[Path, Image.Image]], view: str, fail: Any
) -> Iterator[tuple[Path, Image.Image, CamResult, int]]:
    """Run loaded photos through the network, one pass per group of photos of one size (the
    whole view keeps each photo's shape, so photos of different sizes cannot share a batch),
    one by one when a group's pass fails (one bad image does not sink the others; ``fail`` is
    told of each bad one). Yields (path, photo, result, index in the result)."""
    groups: dict[Any, list[tuple[Path, Image.Image]]] = {}
    for item in items:
        groups.setdefault(item[1].size if view == "whole" else None, []).append(item)
    for group in groups.values():
        try:
            res = net.run([img for _, img in group], view=view)
        except ImageError:
            res = None
        if res is not None:
            for i, (p, img) in enumerate(group):
                yield p, img, res, i
            continue
        for p, img in group:
            try:
                one = net.run([img], view=view)
            except ImageError as err:
                fail(p, err)
                continue
            yield p, img, one, 0


def photo_overlay(photo: np.ndarray, map01: np.ndarray, region: tuple[int, int, int, int],
                  alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """A map over the photo at the photo's resolution: ``map01`` (the region's size) blended
    over ``region`` (left, top, right, bottom) of ``photo``; outside the region (what a crop
    left out) the photo is greyed.

    Example:
        >>> photo_overlay(np.zeros((4, 6, 3), np.uint8), np.ones((4, 6)), (0, 0, 6, 4)).shape
        (4, 6, 3)
    """
    left, top, right, bottom = region
    out = photo.copy()
    if (left, top, right, bottom) != (0, 0, photo.shape[1], photo.shape[0]):
        grey = photo.mean(axis=2, keepdims=True) * 0.5 + 64
        out = np.repeat(grey, 3, axis=2).astype(np.uint8)
    out[top:bottom, left:right] = overlay(photo[top:bottom, left:right], map01, alpha, cmap)
    return out


def _display(arr: np.ndarray, max_side: int = 448) -> np.ndarray:
    h, w = arr.shape[:2]
    if max(h, w) <= max_side:
        return arr
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BILINEAR))


def _write_one(
    res: CamResult,
    i: int,
    path: Path,
    out_dir: Path,
    topk: int,
    alpha: float,
    cmap: str,
    write: Any,
    photo_img: Image.Image,
) -> None:
    one = res.select(i)
    key = image_key(path)
    top = one.topk(topk)
    place = one.placements[0]
    maps_t = one.photo_maps(0, top.indices, normalize=True)  # (k, h, w) on the photo's pixels
    left, top_px = place.region[:2]
    boxes = paper_boxes(maps_t[None])[0] + maps_t.new_tensor([left, top_px, left, top_px])
    maps = maps_t.cpu().numpy()
    photo = np.asarray(photo_img)
    folder = out_dir / key
    folder.mkdir(parents=True, exist_ok=True)
    files, panels, labels = [], [], []
    for rank, (c, name, prob) in enumerate(
        zip(top.indices[0].tolist(), top.names[0], top.probs[0].tolist()), start=1
    ):
        ov = draw_boxes(photo_overlay(photo, maps[rank - 1], place.region, alpha, cmap),
                        boxes[rank - 1 : rank].cpu(), width=max(2, min(photo.shape[:2]) // 150))
        fname = f"top{rank}_{c}_{safe_name(name, 40)}.png"
        save_image(Image.fromarray(ov), folder / fname)
        files.append(f"{key}/{fname}")
        panels.append(_display(ov))
        labels.append(f"{name} {prob:.2f}")
    save_image(grid([_display(photo), *panels], ["photo", *labels]), folder / "panel.png")
    rec: dict[str, Any] = {
        "image": str(path),
        "source": source_of(path),
        "key": key,
        "status": "ok",
        "view": "whole" if place.whole else "crop",
        "image_size": list(place.size),
        "input_size": list(one.input_size),
        "region": list(place.region),
        "top": [
            {"class": c, "name": n, "prob": round(float(p), 6)}
            for c, n, p in zip(top.indices[0].tolist(), top.names[0], top.probs[0].tolist())
        ],
        "overlays": files,
        "panel": f"{key}/panel.png",
        "boxes": boxes.round().long().tolist(),  # the paper's box of each top class's map
        "box_space": "photo pixels (the original image's, image_size), inclusive x0 y0 x1 y1, "
                     "one per top class",
    }
    write(rec)


#: Photos that scikit-image ships (no download): name -> how to get its pixels.
PHOTOS = {
    "chelsea": lambda d: d.chelsea(),
    "coffee": lambda d: d.coffee(),
    "rocket": lambda d: d.rocket(),
    "motorcycle_left": lambda d: d.stereo_motorcycle()[0],
    "astronaut": lambda d: d.astronaut(),
}


def write_photos(folder: str | os.PathLike[str], names: Sequence[str] | None = None) -> list[Path]:
    """Write photos that scikit-image ships (``PHOTOS``) as PNG files into ``folder``.

    Example:
        >>> import tempfile
        >>> [p.name for p in write_photos(tempfile.mkdtemp(), ["coffee"])]
        ['coffee.png']
    """
    import skimage.data

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or list(PHOTOS):
        path = out / f"{name}.png"
        if not path.exists():
            save_image(Image.fromarray(np.asarray(PHOTOS[name](skimage.data))), path)
        paths.append(path)
    return paths


def photo_units(net: GapNet, paths: Sequence[Path], out: Path, k: int = 4) -> None:
    """For each photo, ``<key>/units.png`` in ``out``: the ``k`` units that contribute most to
    its top class's logit, masked on the whole photo, thresholds per image (no dataset to
    scan; the panel says so).

    Example:
        >>> photo_units(net, [Path("cat.png")], Path("out/photos"))  # doctest: +SKIP
    """
    for path in paths:
        key = image_key(path)
        res = net.run([load_image(path)], view="whole")
        top = int(res.topk(1).indices[0, 0])
        panel = units_on_image(res, "image", top, k=k, order="contribution")
        save_image(panel, out / key / "units.png")


def run_demo(out: str | os.PathLike[str], n: int = 6, device: str = "auto",
             progress: bool = True) -> list[tuple[str, Path | None]]:
    """``make demo``'s job, into ``out``: first the ImageNet network efficientnet_lite0 on
    photos that scikit-image ships (per photo the top-5 class maps on the whole photo with
    names, probabilities and boxes, and the top units of the top class), then the bundled
    demo network on ``n`` demo-world images.

    Returns ``(what, folder)`` pairs, one per model run (folder None: skipped, ``what`` says
    why).

    Example:
        >>> run_demo("out/demo")  # doctest: +SKIP
        [('efficientnet_lite0 (ImageNet) on photos that scikit-image ships', ...), ...]
    """
    from camviz.demo import write_demo_images  # the demo world loads on use
    from camviz.models import load_model

    root = Path(out)
    done: list[tuple[str, Path | None]] = []
    try:
        real = load_model("efficientnet_lite0", device=device)
    except MissingExtra as err:
        done.append((f"real photos skipped: {err}", None))
    else:
        photos = write_photos(root / "photo-inputs")
        run_images(real, photos, root / "photos", topk=5, progress=progress, view="whole")
        photo_units(real, photos, root / "photos")
        done.append(("efficientnet_lite0 (ImageNet) on photos that scikit-image ships",
                     root / "photos"))
    paths = write_demo_images(root / "inputs", n=n)
    net = load_model("demo", device=device)
    run_images(net, [str(p) for p in paths], root / "maps", topk=5, progress=progress)
    done.append(("the bundled demo network on demo-world images", root / "maps"))
    return done
