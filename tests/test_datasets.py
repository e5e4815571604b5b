"""camviz.datasets: wsolevaluation metadata folders (boxes / masks), safe paths, missing files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from camviz.datasets import WsolDataset, WsolMetadata, collate, safe_join, scale_boxes
from camviz.errors import DatasetError, UnsafePath
from camviz.images import Preprocess

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "demo-fixture"


def _img(path: Path, w: int = 20, h: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def _mask(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def _write(d: Path, **files: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / f"{name}.txt").write_text(text)


# ---------------------------------------------------------------- paths


def test_safe_join_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert safe_join(root, "a/b.png") == root / "a" / "b.png"
    for bad in ["/etc/passwd", "../x.png", "a/../../x.png", "C:\\x.png", "\\\\server\\x"]:
        with pytest.raises(UnsafePath):
            safe_join(root, bad)
    (tmp_path / "outside.png").write_bytes(b"x")
    os.symlink(tmp_path / "outside.png", root / "link.png")
    with pytest.raises(UnsafePath, match="symlink"):
        safe_join(root, "link.png")
    os.symlink(tmp_path, root / "up")
    with pytest.raises(UnsafePath, match="outside the root"):
        safe_join(root, "up/outside.png")
    assert issubclass(UnsafePath, DatasetError)


def test_metadata_with_an_escaping_path_is_refused(tmp_path):
    _write(tmp_path, image_ids="../secret.png\n", class_labels="../secret.png,0\n")
    with pytest.raises(UnsafePath, match="'..'"):
        WsolMetadata(tmp_path)


# ---------------------------------------------------------------- layouts


def test_boxes_layout_cub_style_with_separate_image_root(tmp_path):
    meta, images = tmp_path / "metadata" / "test", tmp_path / "images"
    _img(images / "001.Bird/a.jpg", 40, 20)
    _img(images / "001.Bird/b.jpg", 40, 20)
    _write(
        meta,
        image_ids="001.Bird/a.jpg\n001.Bird/b.jpg\n001.Bird/gone.jpg",  # no trailing newline
        class_labels="001.Bird/a.jpg,0\n001.Bird/b.jpg,1\n001.Bird/gone.jpg,0\n",
        image_sizes="001.Bird/a.jpg,40,20\n001.Bird/b.jpg,40,20\n001.Bird/gone.jpg,40,20\n",
        localization="001.Bird/a.jpg,1,2,10,12\n001.Bird/a.jpg,20,0,39,19\n"
        "001.Bird/b.jpg,0,0,5,5\n001.Bird/gone.jpg,0,0,1,1\n",
    )
    m = WsolMetadata(meta, image_root=images)
    assert len(m) == 2 and m.has_boxes and not m.has_masks
    assert m.missing == [("001.Bird/gone.jpg", "image file not found")]
    assert m[0].boxes.tolist() == [[1, 2, 10, 12], [20, 0, 39, 19]]
    assert m[0].label == 0 and m[1].label == 1 and m[0].size == (40, 20)


def test_masks_layout_openimages_style(tmp_path):
    _img(tmp_path / "imgs/x.png", 8, 4)
    fg = np.zeros((4, 8), np.uint8)
    fg[1:3, 1:3] = 255
    other = np.zeros((4, 8), np.uint8)
    other[0, 7] = 1  # any non-zero pixel is foreground (> 0.5)
    ign = np.zeros((4, 8), np.uint8)
    ign[:, 0:4] = 255
    _mask(tmp_path / "masks/x_a.png", fg)
    _mask(tmp_path / "masks/x_b.png", other)
    _mask(tmp_path / "masks/x_ign.png", ign)
    _write(
        tmp_path,
        image_ids="imgs/x.png\n",
        class_labels="imgs/x.png,4\n",
        localization="imgs/x.png,masks/x_a.png,masks/x_ign.png\nimgs/x.png,masks/x_b.png,\n",
    )
    m = WsolMetadata(tmp_path)
    assert m.has_masks and not m.has_boxes and len(m[0].mask_paths) == 2
    item = WsolDataset(m)[0]
    assert item["mask"].sum() == 5 and item["mask"][0, 7]
    # ignore minus foreground
    assert item["ignore"].sum() == 16 - 4 and not (item["ignore"] & item["mask"]).any()
    big = WsolDataset(m, map_size=(16, 8))[0]  # nearest-neighbour resize to (W, H)
    assert big["mask"].shape == (8, 16) and big["mask"].sum() == 20


def test_missing_mask_is_reported_not_fatal(tmp_path):
    _img(tmp_path / "x.png")
    _img(tmp_path / "y.png")
    _mask(tmp_path / "ym.png", np.zeros((10, 20)))
    _write(
        tmp_path,
        image_ids="x.png\ny.png\n",
        class_labels="x.png,0\ny.png,1\n",
        localization="x.png,nomask.png,\ny.png,ym.png,\n",
    )
    m = WsolMetadata(tmp_path)
    assert [r.image_id for r in m.records] == ["y.png"]
    assert m.missing[0][0] == "x.png" and "mask file not found" in m.missing[0][1]


def test_malformed_metadata_says_what_is_wrong(tmp_path):
    _img(tmp_path / "x.png")
    _write(tmp_path, image_ids="x.png\n", class_labels="x.png,cat\n")
    with pytest.raises(DatasetError, match=r"class_labels.txt:1: 'cat' is not an integer"):
        WsolMetadata(tmp_path)
    _write(tmp_path, image_ids="x.png\n", class_labels="x.png,0\n", localization="x.png,1,2\n")
    with pytest.raises(DatasetError, match="x0,y0,x1,y1"):
        WsolMetadata(tmp_path)
    with pytest.raises(DatasetError, match="image_ids.txt"):
        WsolMetadata(tmp_path / "nope")


QUIRKS = {
    # file -> (contents, expected message)
    "duplicate id": ({"image_ids": "x.png\ny.png\nx.png\n"},
                     r"image_ids.txt:3: 'x.png' is listed twice \(also on line 1\)"),
    "zero size": ({"image_sizes": "x.png,0,10\n"}, r"image_sizes.txt:1: 0 is below 1"),
    "negative label": ({"class_labels": "x.png,-1\ny.png,0\n"},
                       r"class_labels.txt:1: -1 is below 0"),
    "float label": ({"class_labels": "x.png,1.5\ny.png,0\n"},
                    r"class_labels.txt:1: '1.5' is not an integer"),
    "two labels": ({"class_labels": "x.png,1\ny.png,0\nx.png,2\n"},
                   r"class_labels.txt:3: 'x.png' has two labels \(1 and 2\)"),
    "inf box": ({"localization": "x.png,0,0,inf,4\n"}, r"localization.txt:1: box coordinate"),
    "huge box": ({"localization": "x.png,0,0,1e12,4\n"}, r"localization.txt:1: box coordinate"),
    "inverted box": ({"localization": "x.png,5,0,2,4\n"}, r"x1 < x0 or y1 < y0"),
}


@pytest.mark.parametrize("name", sorted(QUIRKS))
def test_metadata_quirks_are_errors_naming_file_and_line(tmp_path, name):
    _img(tmp_path / "x.png")
    _img(tmp_path / "y.png")
    files = {"image_ids": "x.png\ny.png\n", "class_labels": "x.png,0\ny.png,1\n",
             "localization": "x.png,0,0,4,4\ny.png,0,0,4,4\n"}
    changed, message = QUIRKS[name]
    _write(tmp_path, **{**files, **changed})
    with pytest.raises(DatasetError, match=message):
        WsolMetadata(tmp_path)


def test_bom_crlf_are_read_and_nul_latin1_are_errors(tmp_path):
    _img(tmp_path / "x.png")
    _img(tmp_path / "y.png")
    (tmp_path / "image_ids.txt").write_bytes(b"\xef\xbb\xbfx.png\r\ny.png\r\n")
    (tmp_path / "class_labels.txt").write_bytes(b"x.png,0\r\ny.png,1\r\n")
    meta = WsolMetadata(tmp_path)
    assert [r.image_id for r in meta.records] == ["x.png", "y.png"]  # the BOM lost no image
    assert [r.label for r in meta.records] == [0, 1]
    (tmp_path / "class_labels.txt").write_bytes(b"x.png,0\ny.png,\x001\n")
    with pytest.raises(DatasetError, match=r"class_labels.txt:2: a NUL byte"):
        WsolMetadata(tmp_path)
    (tmp_path / "class_labels.txt").write_bytes("x.png,0\nyé.png,1\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"class_labels.txt:2: not UTF-8 text"):
        WsolMetadata(tmp_path)


def test_a_bad_split_json_names_the_file(tmp_path):
    from camviz.datasets import PartsFolder

    _img(tmp_path / "x.png")
    _write(tmp_path, image_ids="x.png\n", class_labels="x.png,0\n", parts="x.png,disc,x.png\n")
    (tmp_path / "split.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"split.json is not a camviz split description"):
        PartsFolder(tmp_path)
    (tmp_path / "split.json").write_text('{"parts": "disc"}')
    with pytest.raises(DatasetError, match=r"'parts' must be a list"):
        PartsFolder(tmp_path)



def test_parts_folder_reads_images_in_the_frame_of_their_masks(tmp_path):
    """An EXIF rotation turns the photo for people, not for the masks drawn on the stored
    pixels: the item's image keeps the stored 60x20 frame through the transform (which would
    turn a PIL image by its tag), and so does WsolDataset's, whose boxes are in that frame."""
    from camviz.datasets import PartsFolder
    from camviz.images import load_image

    stored = np.zeros((20, 60, 3), np.uint8)
    stored[:, :30] = 255  # the left half of the stored frame is white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(stored).save(tmp_path / "a.jpg", exif=exif, quality=100)
    mask = np.zeros((20, 60), np.uint8)
    mask[:, :30] = 255  # the part is that white half
    _mask(tmp_path / "a_left.png", mask)
    _write(tmp_path, image_ids="a.jpg\n", class_labels="a.jpg,0\n",
           parts="a.jpg,left,a_left.png\n")
    assert load_image(tmp_path / "a.jpg").size == (20, 60)  # upright for people
    item = PartsFolder(tmp_path, transform=Preprocess(mean=(0, 0, 0), std=(1, 1, 1)))[0]
    assert tuple(item["image"].shape) == (3, 20, 60)
    assert item["parts"]["left"].shape == (20, 60)
    white = item["image"].mean(0) > 0.5
    assert (white == item["parts"]["left"]).float().mean() > 0.99  # the mask covers the part
    (tmp_path / "localization.txt").write_text("a.jpg,0,0,30,20\n")  # the white half
    prep = Preprocess(mean=(0, 0, 0), std=(1, 1, 1))
    assert torch.equal(WsolDataset(WsolMetadata(tmp_path), transform=prep)[0]["image"],
                       item["image"])

@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["image_ids", "class_labels", "image_sizes",
                                        "localization", "localization_masks"]),
                       st.binary(max_size=200)))
def test_arbitrary_metadata_bytes_give_records_or_a_dataset_error(files):
    import tempfile

    root = Path(tempfile.mkdtemp())
    _img(root / "x.png")
    (root / "image_ids.txt").write_bytes(b"x.png\n")
    for name, data in files.items():
        (root / f"{name}.txt").write_bytes(data)
    try:
        meta = WsolMetadata(root)
    except DatasetError:
        return
    for rec in meta.records:
        assert rec.boxes.shape[1] == 4 and rec.label >= -1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"GIF89a",
                                                  b"\xff\xd8\xff", b"BM", b"II*\x00"]))
def test_arbitrary_image_bytes_give_an_image_or_an_image_error(data, magic):
    import tempfile

    from camviz.errors import ImageError
    from camviz.images import load_image

    p = Path(tempfile.mkdtemp()) / "f.img"
    p.write_bytes(magic + data)
    try:
        img = load_image(p)
    except ImageError:
        return
    assert img.mode == "RGB" and min(img.size) >= 1


# ---------------------------------------------------------------- boxes and the torch Dataset


def test_scale_boxes_truncates_like_the_reference():
    assert scale_boxes([[10, 20, 99, 149]], (100, 150), (224, 224)).tolist() == [[22, 29, 221, 222]]
    assert scale_boxes([[0, 0, 127, 127]], (128, 128), (224, 224)).tolist() == [[0, 0, 222, 222]]


def test_demo_fixture_as_torch_dataset():
    prep = Preprocess(resize=(64, 64))
    ds = WsolDataset(FIXTURE, transform=prep, map_size=(64, 64))
    assert len(ds) == 32 and ds.missing == []
    item = ds[0]
    assert item["image"].shape == (3, 64, 64)
    assert item["boxes"].shape == (1, 4) and item["mask"].shape == (64, 64)
    x0, y0, x1, y1 = item["boxes"][0]
    ys, xs = np.nonzero(item["mask"])
    assert x0 <= xs.min() + 1 and xs.max() <= x1 + 1 and y0 <= ys.min() + 1 and ys.max() <= y1 + 1
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert batch["image"].shape == (4, 3, 64, 64)
    assert isinstance(batch["label"], torch.Tensor) and len(batch["boxes"]) == 4


def test_image_files_refuse_an_id_listed_twice(tmp_path):
    from camviz.datasets import image_files

    for n in "ab":
        _img(tmp_path / f"{n}.png")
    (tmp_path / "image_ids.txt").write_text("a.png\nb.png\na.png\n")
    with pytest.raises(DatasetError, match=r"image_ids.txt:3: 'a.png' is listed twice \(also "
                                           r"on line 1\)"):
        image_files(tmp_path)


_BYTES = st.binary(max_size=200) | st.sampled_from(
    [b"\xef\xbb\xbf0,a\r\n1,b\r\n", b"0,a\n0,b\n", b"a\x00\n", b"caf\xe9\n", b"", b"1,a\n"])


@settings(max_examples=60, deadline=None)
@given(_BYTES, _BYTES)
def test_arbitrary_parts_split_and_classes_bytes_give_a_result_or_a_camviz_error(parts, split):
    import tempfile

    from camviz.datasets import PartsFolder, read_classes
    from camviz.errors import CamvizError

    root = Path(tempfile.mkdtemp())
    _img(root / "x.png")
    _mask(root / "m.png", np.zeros((10, 20)))
    (root / "image_ids.txt").write_bytes(b"x.png\n")
    (root / "class_labels.txt").write_bytes(b"x.png,0\n")
    (root / "parts.txt").write_bytes(b"x.png,wheel,m.png\n" + parts)
    (root / "split.json").write_bytes(split)
    try:
        ds = PartsFolder(root)
        assert all(isinstance(n, str) for n in ds.part_names)
    except CamvizError:
        pass
    (root / "classes.txt").write_bytes(parts)
    try:
        names = read_classes(root / "classes.txt")
        assert names and all(isinstance(n, str) and n for n in names)
    except CamvizError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM"]))
def test_arbitrary_mask_bytes_give_a_mask_or_a_dataset_error(data, magic):
    import tempfile

    from camviz.datasets import load_mask

    p = Path(tempfile.mkdtemp()) / "m.png"
    p.write_bytes(magic + data)
    try:
        m = load_mask(p)
    except DatasetError:
        return
    assert m.dtype == bool and m.ndim == 2
