"""The browser as a researcher uses it (issue 17: 2-9): a tile's picture shows its unit on the main
view, the error state clears the panels, find by part of a name, labels for in-memory images,
the colour bar's label and threshold mark, the plot at the image's aspect, the layout that keeps
the main view's size, and a throttled threshold drag that always ends on the dropped value."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import camviz
from camviz.widgets import Browser, display_map
from camviz.widgets.figure import figure_height
from camviz.widgets.timing import Throttle

CLASSES = ["house", "tree", "Christmas tree", "tree frog", "moped", "cup"]


@pytest.fixture(scope="module")
def net() -> camviz.GapNet:
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=4, padding=1), nn.ReLU(),
    )
    return camviz.GapNet(features, nn.Linear(16, len(CLASSES)), classes=CLASSES, device="cpu",
                         transform=camviz.Preprocess(resize=40, crop=None))


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    return [(rng.random(s) * 255).astype(np.uint8) for s in ((40, 60, 3), (40, 40, 3))]


def test_a_tile_picture_click_shows_the_unit_on_the_main_view(net, images):
    b = Browser(net, images, units=3)
    z_class = np.asarray(b.figure.data[1].z).copy()
    image, pick = b.unit_panel.boxes[1].image, b.unit_panel.boxes[1].pick
    # the picture is clickable: a transparent button lies over it, in the same grid cell
    assert pick.layout.grid_area == image.layout.grid_area == "tile"
    assert pick.layout.width == image.layout.width and pick.style.button_color == "transparent"
    unit = b.state["units"][1]
    pick.click()
    frame = b.view.frame
    assert b.state["unit"] == unit and b.state["shown"] == "unit"
    np.testing.assert_array_equal(np.asarray(b.figure.data[1].z), display_map(frame.cam01)[0])
    assert not np.allclose(np.asarray(b.figure.data[1].z), z_class)
    assert b.figure.data[1].colorbar.title.text == "unit activation"
    assert f"unit {unit}" in b.figure.layout.title.text and f"unit {unit}" in b.unit_detail.value
    assert b.unit_panel.boxes[1].layout.border.startswith("2px solid #")  # the selected card
    assert b.unit_panel.back.layout.display is None
    b.threshold.value = 0.5  # stays on the unit ...
    assert b.state["shown"] == "unit"
    b.unit_panel.back.click()  # ... until "class map", another unit or another class
    assert b.state["shown"] == "class" and b.unit_panel.back.layout.display == "none"
    np.testing.assert_array_equal(np.asarray(b.figure.data[1].z),
                                  display_map(b.view.frame.cam01)[0])
    b.unit_panel.boxes[0].pick.click()
    assert b.state["unit"] == b.state["units"][0]
    b.class_picker.value = b.class_picker.options[1][1]
    assert b.state["shown"] == "class" and b.state["unit"] is None


def test_the_error_state_clears_the_panels_and_shows_one_message(net, images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    b = Browser(net, [images[0], bad], units=3)
    b.select_unit(b.state["units"][0])
    b.image_picker.value = 1
    assert b.unit_panel.layout.display == "none"  # no stale tiles, buttons or detail
    assert all(card.layout.display == "none" for card in b.unit_panel.boxes)
    assert b.unit_detail.value == "" and b.unit_gallery.layout.display == "none"
    assert b.figure.layout.title.text == "" and b.status.value == ""
    assert "broken.jpg" in b.error.value and b.error.layout.display is None
    b.image_picker.value = 0
    assert b.unit_panel.layout.display is None and b.error.layout.display == "none"
    assert all(card.layout.display is None for card in b.unit_panel.boxes)


def test_fewer_units_than_cards_hide_the_empty_cards(images):
    net = camviz.GapNet(nn.Sequential(nn.Conv2d(3, 2, 3, stride=4), nn.ReLU()),
                        nn.Linear(2, 3), device="cpu", transform=camviz.Preprocess(resize=40))
    b = Browser(net, images, units=4)
    shown = [card.layout.display for card in b.unit_panel.boxes]
    assert shown == [None, None, "none", "none"]


def test_find_by_a_lower_case_substring_with_suggestions(net, images):
    b = Browser(net, images, k=2)
    b.class_search.value = "mop"  # the only name containing it
    assert b.state["class_name"] == "moped" and b.class_search.value == "moped"
    assert b.finder.hint.value == ""
    b.class_search.value = "TREE"  # an exact name wins over the others containing it
    assert b.state["class_name"] == "tree"
    b.class_search.value = "ree"  # three names: listed, nothing chosen yet
    assert b.state["class_name"] == "tree"
    assert "3 classes contain" in b.finder.hint.value
    assert b.finder.matches == ["tree", "Christmas tree", "tree frog"]
    b.class_search.value = "Christmas tree"  # picked from the narrowed list
    assert b.state["class_name"] == "Christmas tree" and b.finder.matches == CLASSES
    b.class_search.value = "zebra"
    assert "no class name contains" in b.finder.hint.value
    assert b.state["class_name"] == "Christmas tree"
    b.class_search.value = "cup"
    b.class_picker.value = b.class_picker.options[0][1]  # the dropdown clears find
    assert b.class_search.value == "" and b.finder.hint.value == ""
    assert b.state["class"] == b.class_picker.options[0][1]


def test_labels_name_in_memory_images_and_paths_show_file_names(net, images, tmp_path):
    b = camviz.browse(net, images, labels=["street", "<kitchen>"])
    assert [lab for lab, _ in b.image_picker.options] == ["street", "<kitchen>"]
    with pytest.raises(camviz.CamvizError, match="labels= names 1 images, but 2 were given"):
        Browser(net, images, labels=["one"])
    from PIL import Image

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(images[0]).save(tmp_path / sub / "cat.png")
    b = Browser(net, [tmp_path / "a" / "cat.png", tmp_path / "b" / "cat.png"])
    assert [lab for lab, _ in b.image_picker.options] == ["a/cat.png", "b/cat.png"]


def test_the_colour_bar_says_what_the_colour_means_and_marks_the_threshold(net, images):
    b = Browser(net, images)
    bar = b.figure.data[1].colorbar
    assert bar.title.text == "normalised CAM"
    assert 0.2 in bar.tickvals and "<b>0.20 mask</b>" in bar.ticktext
    b.threshold.value = 0.55
    bar = b.figure.data[1].colorbar
    assert 0.55 in bar.tickvals and "<b>0.55 mask</b>" in bar.ticktext
    assert 0.5 not in bar.tickvals  # a tick too close to the mark gives way


def test_the_plot_has_the_image_aspect_and_no_band_under_the_title(net, images):
    b = Browser(net, images, size=400)
    h, w = b.view.frame.image.shape[:2]
    assert (h, w) == (40, 60)  # the whole photo (no crop), shorter side 40
    assert b.figure.layout.height == figure_height(400, (h, w)) < figure_height(400, (40, 40))
    assert b.figure.layout.yaxis.constraintoward == "top"
    assert b.figure.layout.width == 400
    assert list(b.figure.layout.xaxis.range) == [-0.5, w - 0.5]  # exactly the image
    assert list(b.figure.layout.yaxis.range) == [h - 0.5, -0.5]  # (row 0 on top)
    b.image_picker.value = 1
    assert b.figure.layout.height == figure_height(400, (40, 40))


def test_the_main_view_never_shrinks_and_the_gallery_scales(net, images):
    b = Browser(net, images, size=420)
    main = next(c for c in b.children[3].children if "camviz-main" in c._dom_classes)
    assert main.layout.flex == "0 0 auto" and main.layout.width == "424px"
    assert b.children[3].layout.flex_flow == "row wrap"
    panel = b.unit_panel.layout
    assert (panel.flex, panel.min_width, panel.overflow) == ("1 1 320px", "0", "hidden")
    assert b.unit_gallery.layout.max_width == "100%"


def test_a_threshold_drag_is_throttled_and_ends_on_the_dropped_value(net, images):
    b = Browser(net, images)
    now, timers, drawn = [0.0], [], []
    drag = b.drags["threshold"]
    drag.clock = lambda: now[0]
    drag.later = lambda delay, fire: timers.append((now[0] + delay, fire)) or True
    update = b._update
    b._update = lambda **c: (drawn.append(c["threshold"]), update(**c))  # type: ignore[method-assign]
    for i, v in enumerate(np.linspace(0.2, 0.7, 26)):  # 26 moves, one every 20 ms
        now[0] = 1.0 + 0.02 * i
        while timers and timers[0][0] <= now[0]:
            timers.pop(0)[1]()
        b.threshold.value = round(float(v), 2)
    assert b.view.state.threshold != 0.7  # the last moves wait for their turn ...
    now[0] += 1.0
    while timers:
        timers.pop(0)[1]()
    assert drawn[-1] == 0.7 and b.view.state.threshold == 0.7  # ... and the last is drawn
    assert 5 <= len(drawn) <= 7  # 0.5 s of dragging: about ten redraws a second


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.3), st.integers(0, 100)), min_size=1, max_size=30))
def test_throttle_spaces_calls_and_always_draws_the_last_value(moves):
    now, timers, drawn = [0.0], [], []
    t = Throttle(lambda v: drawn.append((now[0], v)), 0.1, clock=lambda: now[0],
                 later=lambda d, f: timers.append((now[0] + d, f)) or True)

    def run_until(when: float) -> None:
        while timers and timers[0][0] <= when:
            due, fire = timers.pop(0)
            now[0] = max(now[0], due)
            fire()

    for dt, v in moves:
        target = now[0] + dt
        run_until(target)
        now[0] = target
        t(v)
    run_until(float("inf"))
    assert drawn[-1][1] == moves[-1][1] and not t.pending
    times = [when for when, _ in drawn]
    assert all(b - a >= 0.1 - 1e-9 for a, b in zip(times, times[1:], strict=False))
    assert {v for _, v in drawn} <= {v for _, v in moves}


def test_the_view_shows_the_whole_photo_by_default_and_the_crop_on_request(images):
    from skimage import data

    torch.manual_seed(0)
    net = camviz.load_model("resnet18", weights=None, device="cpu")  # resize 256, crop 224
    chelsea = data.chelsea()  # 451 x 300
    whole = Browser(net, [chelsea], units=2)
    assert whole.view.frame.image.shape == (256, 385, 3)  # shorter side 256, all of the photo
    assert whole.view.frame.cam01.shape == (256, 385) and whole.result.input_size == (256, 385)
    crop = Browser(net, [chelsea], units=2, view="crop")
    assert crop.view.frame.image.shape == (224, 224, 3)
    # the crop is the middle of the whole view: the same pixels, up to resampling
    mid = whole.view.frame.image[16:240, 80:304].astype(int)
    assert np.abs(mid - crop.view.frame.image.astype(int)).mean() < 8
    with pytest.raises(camviz.CamvizError, match="view must be 'whole'"):
        Browser(net, [chelsea], view="centre")


def test_what_is_read_or_saved_is_what_the_sliders_say(net, images):
    b = Browser(net, images)
    timers = []
    b.drags["threshold"].later = lambda d, f: timers.append(f) or True
    b.threshold.value = 0.3  # drawn at once
    b.threshold.value = 0.6  # held by the throttle (a timer is pending) ...
    assert b.view.state.threshold == 0.3 and timers
    assert b.state["threshold"] == 0.6  # ... until something reads the state
    b.threshold.value = 0.7
    fig = b.paper_figure()
    assert "threshold 0.70" in next(a for a in fig.axes if a.get_label() == "map").get_title()
