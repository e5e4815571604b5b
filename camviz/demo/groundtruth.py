"""Write demo splits to disk in the wsolevaluation metadata layout (plus parts), and cache them.

The layout of a split folder is documented in :mod:`camviz.demo`.

Example:
    >>> import tempfile
    >>> root = write_split("val", 2, tempfile.mkdtemp() + "/val", progress=False)
    >>> (root / "image_ids.txt").read_text().splitlines()
    ['images/000000.png', 'images/000001.png']
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from camviz import files
from camviz.demo.world import (
    CLASS_SETS,
    PARTS,
    WORLD_SEED,
    WORLD_VERSION,
    Sample,
    class_names,
    render_sample,
)
from camviz.errors import DatasetError

_FILES = (
    "image_ids.txt",
    "class_labels.txt",
    "image_sizes.txt",
    "localization.txt",
    "localization_masks.txt",
    "parts.txt",
    "distractors.txt",
)


def cache_dir() -> Path:
    """camviz's cache folder: ``$CAMVIZ_CACHE``, else ``~/.cache/camviz``.

    Example:
        >>> isinstance(cache_dir(), Path)
        True
    """
    env = os.environ.get("CAMVIZ_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "camviz"


def _png(arr: np.ndarray, path: Path) -> None:
    if arr.dtype == np.bool_:
        Image.fromarray(arr.astype(np.uint8) * 255, mode="L").save(path, optimize=False)
    else:
        Image.fromarray(arr).save(path, optimize=False)


def _write_one(args: tuple[str, int, int, str, str]) -> dict:
    split, index, seed, root, classes = args
    s: Sample = render_sample(split, index, seed=seed, classes=classes)
    out = Path(root)
    name = f"{index:06d}"
    img, mask = f"images/{name}.png", f"masks/{name}.png"
    _png(s.image, out / img)
    _png(s.mask, out / mask)
    parts = []
    for kind, m in s.parts.items():
        p = f"parts/{name}_{kind}.png"
        _png(m, out / p)
        parts.append((kind, p))
    distr = []
    for j, (kind, m) in enumerate(s.distractors):
        p = f"parts/{name}_distractor{j}_{kind}.png"
        _png(m, out / p)
        distr.append((kind, p))
    h, w = s.image.shape[:2]
    return {"path": img, "label": s.label, "size": (w, h), "box": s.box, "mask": mask,
            "parts": parts, "distractors": distr}


def write_split(
    split: str,
    n: int,
    out: str | os.PathLike[str],
    seed: int = WORLD_SEED,
    start: int = 0,
    workers: int = 1,
    progress: bool = True,
    classes: str = "base",
) -> Path:
    """Generate images ``start .. start + n - 1`` of ``split`` into the folder ``out``.

    Writes the images, masks and the metadata files of :mod:`camviz.demo`'s layout. ``workers``
    > 1 draws in parallel processes (same pixels either way). ``classes``: the class set,
    "base" (the demo nets' 9 classes) or "novel" (4 others). Returns ``out`` as a Path.

    Example:
        >>> import tempfile
        >>> root = write_split("test", 1, tempfile.mkdtemp(), progress=False)
        >>> sorted(p.name for p in root.iterdir())[:3]
        ['class_labels.txt', 'classes.txt', 'distractors.txt']
    """
    if n < 1:
        raise DatasetError(f"n must be at least 1, got {n}")
    _check_classes(classes)
    root = Path(out)
    for sub in ("images", "masks", "parts"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(split, i, seed, str(root), classes) for i in range(start, start + n)]
    rows: Iterable[dict]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(_progress(pool.map(_write_one, jobs, chunksize=16), n, split, progress))
    else:
        rows = list(_progress(map(_write_one, jobs), n, split, progress))
    _write_metadata(root, rows, split, seed, start, classes)
    return root


def _check_classes(classes: str) -> None:
    if classes not in CLASS_SETS:
        raise DatasetError(f"unknown class set {classes!r}; use one of {sorted(CLASS_SETS)}")


def _progress(it: Iterable[dict], n: int, split: str, on: bool) -> Iterable[dict]:
    if not on:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=n, desc=f"demo {split}", unit="img")


def _write_metadata(
    root: Path, rows: list[dict], split: str, seed: int, start: int, classes: str
) -> None:
    def lines(items: Iterable[str]) -> str:
        return "\n".join(items) + "\n"

    (root / "image_ids.txt").write_text(lines(r["path"] for r in rows))
    (root / "class_labels.txt").write_text(lines(f"{r['path']},{r['label']}" for r in rows))
    (root / "image_sizes.txt").write_text(
        lines(f"{r['path']},{r['size'][0]},{r['size'][1]}" for r in rows)
    )
    (root / "localization.txt").write_text(
        lines(f"{r['path']},{','.join(str(v) for v in r['box'])}" for r in rows)
    )
    (root / "localization_masks.txt").write_text(lines(f"{r['path']},{r['mask']}," for r in rows))
    (root / "parts.txt").write_text(
        lines(f"{r['path']},{k},{p}" for r in rows for k, p in r["parts"])
    )
    (root / "distractors.txt").write_text(
        lines(f"{r['path']},{k},{p}" for r in rows for k, p in r["distractors"])
    )
    names = class_names(classes)
    (root / "classes.txt").write_text(lines(f"{i},{c}" for i, c in enumerate(names)))
    info = {"world": "camviz.demo", "version": WORLD_VERSION, "split": split, "seed": seed,
            "start": start, "n": len(rows), "class_set": classes, "classes": list(names),
            "parts": list(PARTS)}
    (root / "split.json").write_text(json.dumps(info, indent=1) + "\n")


def write_demo_images(
    out: str | os.PathLike[str], n: int = 6, split: str = "showcase", seed: int = WORLD_SEED
) -> list[Path]:
    """Write ``n`` demo images, one class after another, as ``NN_<class>.png`` into ``out``.

    For ``make demo`` and notebooks: just the pictures (no metadata). Returns their paths.

    Example:
        >>> import tempfile
        >>> [p.name for p in write_demo_images(tempfile.mkdtemp(), n=2)]
        ['00_house.png', '01_tree.png']
    """
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        s = render_sample(split, i, seed=seed, label=i % len(class_names()))
        p = dest / f"{i:02d}_{s.class_name}.png"
        files.save_image(Image.fromarray(s.image), p)
        paths.append(p)
    return paths


def ensure_split(
    split: str, n: int, seed: int = WORLD_SEED, progress: bool = False, classes: str = "base"
) -> Path:
    """The folder of a demo split of ``n`` images, generated once into the cache and reused.

    Lives under ``cache_dir()/demo/``; written to a temporary folder and renamed, so a half-written
    split is never returned. Returns the split's root (metadata and images both in it).
    ``classes="novel"`` gives a split of the novel class set (``novel-<split>-<n>``), whose
    images are none of the base set's.

    Example:
        >>> root = ensure_split("test", 4)  # doctest: +SKIP
        >>> len((root / "image_ids.txt").read_text().split())  # doctest: +SKIP
        4
    """
    if n < 1:
        raise DatasetError(f"n must be at least 1, got {n}")
    _check_classes(classes)
    base = cache_dir() / "demo"
    name = f"{split}-{n}" if classes == "base" else f"{classes}-{split}-{n}"
    final = base / f"v{WORLD_VERSION}-seed{seed}" / name
    if (final / "split.json").is_file():
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_splits(final.parent, name)
        # the pid in the name: a killed generation's folder is told from a running one's
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-{os.getpid()}-", dir=final.parent))
    except OSError as err:
        raise DatasetError(
            f"the demo split {name} cannot be written into {final.parent} "
            f"({err.strerror or err}); set CAMVIZ_CACHE to a writable folder") from err
    try:
        write_split(split, n, tmp, seed=seed, progress=progress, classes=classes)
        tmp.chmod(files.umask_mode(0o777))  # mkdtemp makes it owner-only
        try:
            tmp.rename(final)
        except OSError:  # another process finished the same split first: use theirs
            if not (final / "split.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _remove_stale_splits(folder: Path, name: str) -> None:
    """Remove the temporary folders of split ``name`` whose generating process is gone."""
    head = f".{name}-"
    for d in folder.glob(f"{head}*"):
        pid = d.name[len(head):].split("-", 1)[0]
        if d.is_dir() and not (pid.isdigit() and files.pid_alive(int(pid))):
            shutil.rmtree(d, ignore_errors=True)
