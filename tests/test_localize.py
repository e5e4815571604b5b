"""camviz.localize: masks, regions, inclusive boxes, and the WSOL reference's box extraction.

The reference vectors are the wsolevaluation unit tests (../shared/notes/wsol-protocol.md);
the "OpenCV" cases were produced once by running the reference function (cv2.findContours
RETR_TREE / CHAIN_APPROX_SIMPLE, contourArea, boundingRect) under opencv-python-headless 4.8.1
and 5.0.0 (identical results); OpenCV is not needed to run these tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from camviz.errors import CamvizError
from camviz.localize import (
    InvalidMap,
    boxes,
    mask,
    paper_box,
    paper_boxes,
    quantise,
    reference_boxes,
    regions,
)

T5 = [0.0, 0.2, 0.4, 0.6, 0.8]
UNIMODAL = np.array(
    [[0, 0, 0, 0, 0], [0, 0.4, 0.4, 0.4, 0.6], [0, 0.4, 1, 0.8, 0.6], [0, 0.4, 0.4, 0.4, 0.6]]
)
MULTIMODAL = np.array(
    [[0.4, 0, 0.2, 0.2, 0.2], [0.4, 0.4, 0, 0.4, 0], [0, 0, 0, 0.4, 0], [1, 0.6, 0.8, 0.2, 0.2]]
)


def _single(cam, ts):
    return [b.tolist()[0] for b in reference_boxes(cam, ts, multi_contour=False)]


def _multi(cam, ts):
    return [sorted(b.tolist()) for b in reference_boxes(cam, ts, multi_contour=True)]


# ---------------------------------------------------------------- published reference vectors


def test_reference_unimodal_vectors():
    assert _single(UNIMODAL, T5) == [
        [1, 1, 4, 3],
        [1, 1, 4, 3],
        [2, 1, 4, 3],
        [2, 2, 4, 3],
        [2, 2, 3, 3],
    ]


def test_reference_boxes_take_a_lone_threshold():
    # the same box as the 3rd published threshold of the unimodal vector (t = 0.4)
    one = reference_boxes(UNIMODAL, float(T5[2]))
    assert len(one) == 1 and one[0].tolist() == [[2, 1, 4, 3]]


def test_reference_multimodal_vectors():
    assert _single(MULTIMODAL, T5) == [
        [0, 0, 4, 3],
        [0, 0, 2, 2],
        [0, 3, 3, 3],
        [2, 3, 3, 3],
        [0, 3, 1, 3],
    ]


def test_multimodal_multi_contour_matches_opencv():
    assert _multi(MULTIMODAL, T5) == [
        [[0, 0, 4, 3]],
        [[0, 0, 2, 2], [0, 1, 4, 3]],
        [[0, 3, 3, 3]],
        [[0, 3, 1, 3], [2, 3, 3, 3]],
        [[0, 3, 1, 3]],
    ]


def test_all_zero_map_gives_zero_box_at_every_threshold():
    z = np.zeros((3, 3))
    for multi in (False, True):
        assert [b.tolist() for b in reference_boxes(z, T5, multi)] == [[[0, 0, 0, 0]]] * 5


def test_nan_map_is_a_value_error():
    with pytest.raises(ValueError, match="NaN"):
        reference_boxes(np.full((3, 3), np.nan), T5)
    with pytest.raises(InvalidMap, match="normalise"):
        reference_boxes(np.array([[0.0, np.nan], [1.0, 0.5]]), T5)
    assert issubclass(InvalidMap, CamvizError)


def test_out_of_range_and_wrong_shape_are_refused():
    with pytest.raises(InvalidMap, match=r"\[0, 1\]"):
        reference_boxes(np.array([[0.0, 1.5]]), [0.0])
    with pytest.raises(InvalidMap, match="shape"):
        reference_boxes(np.zeros((2, 3, 3)), [0.0])


def test_quantisation_truncates_in_float64():
    assert quantise(np.array([[0.5, 1.0, 0.0039, 0.4]])).tolist() == [[127, 255, 0, 102]]
    # float32 input is widened first, as the reference's np.float maps would be
    assert quantise(np.array([[0.4]], dtype=np.float32)).tolist() == [[102]]


# ---------------------------------------------------------------- OpenCV-generated edge cases


def _ring():
    z = np.zeros((5, 5))
    z[1:4, 1:4] = 1
    z[2, 2] = 0
    return z


def _island_in_hole():
    z = np.zeros((9, 9))
    z[1:8, 1:8] = 0.6
    z[2:7, 2:7] = 0
    z[4, 4] = 1.0
    return z


def _diagonal():
    z = np.zeros((6, 6))
    z[0, 0] = z[1, 1] = z[2, 2] = z[4, 4] = z[5, 5] = 1
    return z


def _one_pixel_corner():
    z = np.zeros((4, 4))
    z[3, 3] = 1
    return z


def _line_vs_blob():
    z = np.zeros((6, 8))
    z[0, 0:7] = 1  # 7 pixels, contour area 0
    z[3:5, 3:5] = 0.5  # 4 pixels, contour area 1
    return z


def _tie():
    z = np.zeros((6, 8))
    z[1:3, 1:3] = 1
    z[3:5, 5:7] = 1
    return z


def _at_quantised_cut():
    z = np.zeros((3, 5))
    z[1, 1], z[1, 3], z[2, 0] = 0.2, 0.21, 1.0  # u8 51 is not > int(0.2 * 255) = 51
    return z


def _border():
    z = np.zeros((5, 5))
    z[1:4, 0:2] = 1
    z[2, 4] = 0.7
    return z


def _three_holes():
    z = np.zeros((7, 7))
    z[1:6, 1:6] = 1
    z[2, 2] = z[4, 4] = z[2, 4] = 0
    return z


def _diagonal_holes():
    z = np.zeros((6, 6))
    z[1:5, 1:5] = 1
    z[2, 2] = z[3, 3] = 0  # diagonal background pixels are two 4-connected holes
    return z


OPENCV_CASES = {
    "ring": (_ring, [0.0, 0.5], [[1, 1, 4, 4]] * 2, [[[1, 1, 4, 4], [1, 1, 4, 4]]] * 2),
    "island_in_hole": (
        _island_in_hole,
        [0.0, 0.7],
        [[1, 1, 8, 8], [4, 4, 5, 5]],
        [[[1, 1, 8, 8], [1, 1, 8, 8], [4, 4, 5, 5]], [[4, 4, 5, 5]]],
    ),
    "diagonal": (_diagonal, [0.0], [[4, 4, 5, 5]], [[[0, 0, 3, 3], [4, 4, 5, 5]]]),
    "one_pixel_corner": (_one_pixel_corner, [0.0, 0.5], [[3, 3, 3, 3]] * 2, [[[3, 3, 3, 3]]] * 2),
    "line_vs_blob": (_line_vs_blob, [0.0], [[3, 3, 5, 5]], [[[0, 0, 7, 1], [3, 3, 5, 5]]]),
    "tie": (_tie, [0.0], [[5, 3, 7, 5]], [[[1, 1, 3, 3], [5, 3, 7, 5]]]),
    "at_quantised_cut": (
        _at_quantised_cut,
        [0.0, 0.2],
        [[3, 1, 4, 2], [0, 2, 1, 2]],
        [[[0, 1, 2, 2], [3, 1, 4, 2]], [[0, 2, 1, 2], [3, 1, 4, 2]]],
    ),
    "border": (
        _border,
        [0.0, 0.8],
        [[0, 1, 2, 4]] * 2,
        [[[0, 1, 2, 4], [4, 2, 4, 3]], [[0, 1, 2, 4]]],
    ),
    "three_holes": (
        _three_holes,
        [0.0],
        [[1, 1, 6, 6]],
        [[[1, 1, 4, 4], [1, 1, 6, 6], [3, 1, 6, 4], [3, 3, 6, 6]]],
    ),
    "diagonal_holes": (
        _diagonal_holes,
        [0.0],
        [[1, 1, 5, 5]],
        [[[1, 1, 4, 4], [1, 1, 5, 5], [2, 2, 5, 5]]],
    ),
}


@pytest.mark.parametrize("name", sorted(OPENCV_CASES))
def test_matches_opencv_on_edge_cases(name):
    make, ts, single, multi = OPENCV_CASES[name]
    cam = make()
    assert _single(cam, ts) == single
    assert _multi(cam, ts) == multi


def test_one_pixel_wide_line_loses_to_a_smaller_blob():
    # the contour-area rule, not the pixel count, picks the single box
    assert _single(_line_vs_blob(), [0.0]) == [[3, 3, 5, 5]]
    assert boxes(_line_vs_blob(), 0.0).tolist() == [[0, 0, 6, 0]]  # camviz: most pixels


# ---------------------------------------------------------------- camviz helpers


def test_mask_is_strict_and_relative_to_each_maps_max():
    cam = np.array([[[0.0, 0.2], [0.5, 1.0]], [[0.0, 2.0], [0.39, 0.41]]])
    assert mask(cam, 0.2).tolist() == [
        [[False, False], [True, True]],
        [[False, True], [False, True]],
    ]
    t = torch.tensor(cam)
    assert torch.equal(mask(t, 0.2), torch.from_numpy(mask(cam, 0.2)))


def test_regions_are_eight_connected():
    m = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]], bool)
    assert regions(m).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0], [2, 2, 0]]


def test_boxes_numpy_torch_and_batches():
    cam = np.zeros((2, 6, 7))
    cam[0, 1:3, 1:4] = 1.0
    cam[0, 5, 6] = 0.9
    cam[1, 0, 0] = 1.0
    assert boxes(cam[0], 0.5).tolist() == [[1, 1, 3, 2]]
    assert boxes(cam[0], 0.5, mode="all").tolist() == [[1, 1, 3, 2], [6, 5, 6, 5]]
    out = boxes(torch.tensor(cam), 0.5)
    assert isinstance(out, list) and [o.tolist() for o in out] == [[[1, 1, 3, 2]], [[0, 0, 0, 0]]]
    assert out[0].dtype == torch.int64
    assert boxes(np.zeros((3, 3)), 0.5).shape == (0, 4)
    with pytest.raises(CamvizError, match="mode"):
        boxes(cam[0], 0.5, mode="biggest")


def test_paper_box_shapes_and_constant_map():
    cam = np.zeros((3, 2, 8, 8))
    cam[..., 2:5, 3:7] = 5.0
    cam[1, 1] = 7.0  # constant -> nothing above 20% after min-max
    out = paper_boxes(torch.tensor(cam))
    assert out.shape == (3, 2, 4)
    assert out[0, 0].tolist() == [3, 2, 6, 4]
    assert out[1, 1].tolist() == [0, 0, 0, 0]
    assert paper_box(cam[0, 0]).tolist() == [3, 2, 6, 4]


def test_paper_box_keeps_the_largest_component():
    cam = np.zeros((10, 10))
    cam[0, 0] = 1.0  # the peak, alone
    cam[4:8, 4:9] = 0.5
    assert paper_box(cam).tolist() == [4, 4, 8, 7]


# ---------------------------------------------------------------- properties

maps = arrays(
    np.float64,
    st.tuples(st.integers(1, 9), st.integers(1, 9)),
    elements=st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.5, 0.6, 0.8, 1.0]),
)


@settings(max_examples=150, deadline=None)
@given(maps, st.sampled_from([0.0, 0.2, 0.5]))
def test_every_region_is_inside_its_box(cam, t):
    fg = mask(cam, t)
    lab = regions(fg)
    all_boxes = boxes(cam, t, mode="all")
    assert len(all_boxes) == lab.max()
    for i, (x0, y0, x1, y1) in enumerate(all_boxes.tolist(), start=1):
        ys, xs = np.nonzero(lab == i)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x0, y0, x1, y1)


@settings(max_examples=150, deadline=None)
@given(maps, st.sampled_from([0.0, 0.3, 0.6]))
def test_reference_single_box_is_one_of_the_multi_boxes(cam, t):
    single = reference_boxes(cam, [t])[0].tolist()
    multi = reference_boxes(cam, [t], multi_contour=True)[0].tolist()
    assert len(single) == 1 and single[0] in multi
    # every foreground pixel lies inside some multi box (x1/y1 are one past or clipped)
    u8 = quantise(cam)
    fg = u8 > int(t * u8.max())
    for y, x in zip(*np.nonzero(fg), strict=True):
        assert any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in multi)


def test_helpers_on_nan_and_constant_maps():
    nan = np.full((3, 3), np.nan)
    assert not mask(nan).any() and boxes(nan).shape == (0, 4)
    assert paper_box(nan).tolist() == [0, 0, 0, 0]  # NaN -> zeros, as min_max does
    assert boxes(np.ones((3, 3)), 0.5).tolist() == [[0, 0, 2, 2]]  # constant: all above 50%
