"""Write the real-photo fixture: an ImageFolder (one sub-folder per class) of crops and flips of
photos that scikit-image ships (no download), for the tests of new heads on an ImageNet network.

    python data/make_photos.py          # rewrites data/photos/<class>/*.jpg (deterministic)

Four classes (astronaut, cat, coffee, rocket), eight images each: a seeded random crop of 55-90%
of the photo's shorter side, flipped left-right every other image, resized to 112 x 112, JPEG
quality 80 (about 5 kB each).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

PHOTOS = {"astronaut": "astronaut", "cat": "chelsea", "coffee": "coffee", "rocket": "rocket"}
PER_CLASS, SIZE = 8, 112


def main() -> None:
    root = Path(__file__).resolve().parent / "photos"
    rng = np.random.default_rng(2016)
    for name, photo in PHOTOS.items():
        img = Image.fromarray(getattr(skimage.data, photo)()).convert("RGB")
        w, h = img.size
        (root / name).mkdir(exist_ok=True)
        for i in range(PER_CLASS):
            side = int(min(w, h) * rng.uniform(0.55, 0.9))
            x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = img.crop((x0, y0, x0 + side, y0 + side)).resize((SIZE, SIZE), Image.BICUBIC)
            if i % 2:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            crop.save(root / name / f"{name}_{i}.jpg", quality=80)


if __name__ == "__main__":
    main()
