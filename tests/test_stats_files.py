"""Unit statistics files are untrusted (issue 16, item 13): a crafted or damaged file gives a
CamvizError saying it is not a camviz statistics file of this version, never another exception,
never statistics that are silently wrong."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from camviz.errors import CamvizError
from camviz.unitstats import FORMAT, UnitStats, from_state_arrays, state_arrays

NOT_OURS = "is not a camviz unit statistics file of this version"


def _stats() -> UnitStats:
    st_ = UnitStats.empty(3, ["a", "b"], top_n=2, resolution=16)
    g = torch.Generator().manual_seed(0)
    st_.quantiles.update(torch.rand(200, 3, generator=g))  # compacts: several levels
    st_.top.update(torch.rand(5, 3, generator=g))
    st_.pred_count[:] = torch.tensor([3, 2])
    st_.label_count[:] = torch.tensor([1, 1])
    st_.num_images = 5
    st_.weight, st_.bias = torch.ones(2, 3), torch.zeros(2)
    return st_


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load(tmp_path, data: bytes):
    p = tmp_path / "s.npz"
    p.write_bytes(data)
    return UnitStats.load(p)


def _use(stats: UnitStats) -> None:
    """What a reader does with loaded statistics: nothing but CamvizError may come of it."""
    try:
        stats.thresholds()
        stats.top_images(0)
        stats.mean_pooled("label")
        stats.class_contributions()
    except CamvizError:
        pass


def test_a_valid_state_round_trips(tmp_path):
    st_ = _stats()
    back = _load(tmp_path, _npz(state_arrays(st_)))
    assert torch.equal(back.thresholds(0.5), st_.thresholds(0.5))
    assert torch.equal(back.top.indices, st_.top.indices)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda a: a.pop("quantiles.samples"), "a sketch with a count but no samples"),
        (lambda a: a.pop("label_sum"), "no 'label_sum' array"),
        (lambda a: a.pop("info"), "'info'"),
        (lambda a: a.update({"pooled_sum": np.zeros(4)}), "'pooled_sum' is float64 (4,)"),
        (lambda a: a.update({"quantiles.samples": a["quantiles.samples"][:, :-1]}),
         "'quantiles.samples' is float32"),
        (lambda a: a["quantiles.samples"].__setitem__((0, 0), np.nan),
         "'quantiles.samples' holds NaN values"),
        (lambda a: a["top.indices"].__setitem__((1, 0), 99), "top-k image indices out of range"),
        (lambda a: a["top.indices"].__setitem__((1, 0), -7), "top-k image indices out of range"),
        (lambda a: a["pred_count"].__setitem__(0, 50), "counts more images than the 5 scanned"),
        (lambda a: a["quantiles.meta"].__setitem__(3, 201),
         "sketch weights do not add up to its count"),
        (lambda a: a.update({"label_sum": a["label_sum"].astype(np.int64)}),
         "'label_sum' is int64"),
        (lambda a: a.update({"weight": np.full((2, 3), np.inf, np.float32)}),
         "'weight' holds NaN or infinite values"),
        (lambda a: a.update({"info": np.array(json.dumps({"format": "camviz.unitstats/1"}))}),
         "format 'camviz.unitstats/1'"),
    ],
)
def test_crafted_states_are_refused_with_the_reason(tmp_path, change, why):
    arrays = {k: np.array(v) for k, v in state_arrays(_stats()).items()}
    change(arrays)
    with pytest.raises(CamvizError) as err:
        _load(tmp_path, _npz(arrays))
    msg = str(err.value)
    assert f"s.npz {NOT_OURS} ({FORMAT})" in msg and why in msg and msg.endswith("`camviz scan`")


def test_damaged_files_are_refused(tmp_path):
    good = _npz(state_arrays(_stats()))
    for data in (good[: len(good) // 2], b"PK\x03\x04" + b"\0" * 40, b"\x93NUMPY",
                 _npz({"x": np.zeros(2)})):
        with pytest.raises(CamvizError, match=NOT_OURS):
            _load(tmp_path, data)
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(CamvizError, match="not an .npz archive"):
        UnitStats.load(tmp_path / "one.npy")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("info.npy", b"not an array")
    with pytest.raises(CamvizError, match=NOT_OURS):
        _load(tmp_path, buf.getvalue())


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3000))
def test_arbitrary_bytes_give_stats_or_a_camviz_error(tmp_path, data):
    with contextlib.suppress(CamvizError):
        _use(_load(tmp_path, data))


GOOD = _npz(state_arrays(_stats()))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, len(GOOD)), flips=st.lists(
    st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), max_size=4))
def test_damaged_bytes_of_a_real_file_give_stats_or_a_camviz_error(tmp_path, cut, flips):
    data = bytearray(GOOD)
    for pos, val in flips:
        data[pos] = val
    with contextlib.suppress(CamvizError):
        _use(_load(tmp_path, bytes(data[: max(cut, 1)] if cut < len(GOOD) else data)))


KEYS = sorted(state_arrays(_stats()))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.bool_, np.uint8]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
)


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(KEYS), value=arrays | st.none(),
       field=st.sampled_from(["classes", "num_images", "feature_size", "input_size", "level",
                              "meta", "format", None]),
       field_value=json_values)
# found on a fresh clone: a 0-d top.meta with the info's meta emptied was an IndexError
@example(key="top.meta", value=np.array(0.0, dtype=np.float32), field="meta", field_value={})
def test_crafted_arrays_and_info_give_stats_or_a_camviz_error(key, value, field, field_value):
    state = {k: np.array(v) for k, v in state_arrays(_stats()).items()}
    if key != "info":
        if value is None:
            state.pop(key)
        else:
            state[key] = value
    if field is not None:
        info = json.loads(str(state["info"]))
        info[field] = field_value
        state["info"] = np.array(json.dumps(info))
    with contextlib.suppress(CamvizError):
        _use(from_state_arrays(state))
