"""The demo world: an offline dataset with boxes, masks and parts, and GAP/GMP nets trained on it.

Nine classes, each an arrangement of two or three parts from a shared vocabulary of six part types
(disc, ring, square, triangle, bar, cross) — a house is a triangle over a square, a tree a triangle
over a bar, a sign a square over a bar, a cart a square over two rings, ... — drawn at 15-60% of
the image side, rotated up to 30 degrees, in random colours, on textures that scikit-image ships,
with clutter strokes and 1-3 stray parts. So neither one part nor a colour gives the class away.
Images are 128 x 128 and fully determined by (seed, split, index): see :mod:`camviz.demo.world`.

Novel classes (:data:`NOVEL_CLASSES`: dumbbell = disc, bar, disc side by side; glasses = ring,
bar, ring; robot = a small square over a large one; pine = a small triangle over a large one)
are arrangements of the same parts that no base class uses and the demo nets never saw. They
come as splits of their own: ``ensure_split("train", 200, classes="novel")``, the data spec
``demo-novel:train:200``, ``python -m camviz.demo generate --classes novel``; their labels index
``NOVEL_CLASSES`` (the split's ``classes.txt``). For heads fitted on the frozen demo trunk
(:func:`camviz.fit_head`, ``benchmarks/fewshot_quality.py``).

Split folder layout (``python -m camviz.demo generate --split test --n 1000 --out DIR``; the
folder is the root every path below is relative to; the wsolevaluation layout plus three files)::

    DIR/
      image_ids.txt            images/000000.png                     one image a line
      class_labels.txt         images/000000.png,3                   class index (classes.txt)
      image_sizes.txt          images/000000.png,128,128             width,height
      localization.txt         images/000000.png,x0,y0,x1,y1         object box, inclusive pixels
      localization_masks.txt   images/000000.png,masks/000000.png,   mask_path,ignore_path (none)
      parts.txt                images/000000.png,bar,parts/000000_bar.png
                               one line per part type of the object: the visible pixels of
                               that part (two instances of one type, e.g. a cart's rings, merged)
      distractors.txt          images/000000.png,disc,parts/000000_distractor0_disc.png
                               stray parts (not the object), same columns as parts.txt
      classes.txt              3,lollipop                            index,name
      split.json               world version, seed, split, n, class and part names
      images/ masks/ parts/    PNGs; masks are 8-bit, 0 or 255

The box is the bounding box of the object mask; every part mask lies inside the object mask;
distractor masks lie outside the object's box.

Models: ``camviz.load_model("demo")`` (global average pooling) and ``"demo-gmp"`` (global max
pooling, same architecture and training), both with class names and preprocessing;
``"demo-fc-gap"``, a VGG-style net with fully connected layers converted to GAP and fine-tuned
(:mod:`camviz.demo.fcnet`; ``"demo-fc"``, its unconverted baseline, is refused). They are
registered lazily in :mod:`camviz.registry` (this package is imported when one is loaded).

Example:
    >>> import camviz
    >>> net = camviz.load_model("demo", device="cpu")
    >>> net.classes == list(CLASSES), net.pool
    (True, 'avg')
"""

from __future__ import annotations

from camviz.demo.groundtruth import cache_dir, ensure_split, write_demo_images, write_split
from camviz.demo.net import DemoModel, demo_transform, load_demo, training_info
from camviz.demo.world import (
    CLASSES,
    IMAGE_SIZE,
    NOVEL_CLASSES,
    PARTS,
    Sample,
    class_names,
    render_sample,
)

__all__ = [
    "CLASSES",
    "IMAGE_SIZE",
    "NOVEL_CLASSES",
    "PARTS",
    "DemoModel",
    "Sample",
    "cache_dir",
    "class_names",
    "demo_transform",
    "ensure_split",
    "load_demo",
    "render_sample",
    "training_info",
    "write_demo_images",
    "write_split",
]

