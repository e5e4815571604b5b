"""Linear heads on feature vectors: multinomial logistic regression or a one-vs-rest linear SVM.

:func:`fit_linear` fits ``W`` (C, K) and ``b`` (C,) on features ``x`` (N, K) with labels ``y``,
on ``x``'s device and in its dtype, with L-BFGS (full batch) on the centred features scaled to
unit mean squared norm. The L2 strength is chosen on a held-out part of the data (a seeded split,
stratified by class) from a grid, strongest first, each fit warm-starting the next; the winner is
refitted on all the data.

The objective (``x`` the features, ``s2`` their mean squared distance from their mean)::

    softmax:  mean_i CE(W x_i + b, y_i)                                + l2 * s2 / 2 * |W|^2
    svm:      sum_c mean_i max(0, 1 - t_ic (w_c . x_i + b_c))^2       + l2 * s2 / 2 * |W|^2

with ``t_ic = +1`` if ``y_i = c`` else ``-1``; the bias is not regularised (liblinear's ``-B 1``
regularises it as a constant feature; this is the only difference). Scaling by ``s2`` makes
``l2`` independent of the features' scale.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(60, 5, generator=g) + torch.arange(3).repeat(20)[:, None] * 3.0
    >>> fit = fit_linear(x, torch.arange(3).repeat(20), 3, l2=1e-3)
    >>> fit.weight.shape, fit.train_accuracy
    (torch.Size([3, 5]), 100.0)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from camviz.errors import CamvizError, DatasetError
from camviz.hooks import torch_threads

__all__ = ["DEFAULT_L2", "LOSSES", "LinearFit", "check_labels", "fit_linear"]

Tensor = torch.Tensor

#: The losses :func:`fit_linear` knows.
LOSSES = ("softmax", "svm")
#: The L2 strengths tried on the held-out part (see the module doc).
DEFAULT_L2 = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


@dataclass
class LinearFit:
    """A fitted head: ``weight`` (C, K), ``bias`` (C,) on the features' device; ``loss``;
    ``l2`` (the strength chosen); ``holdout_accuracy`` (percent, of the chosen strength fitted
    on the training part; None without a held-out part); ``grid`` (one ``(l2, held-out
    accuracy, held-out loss)`` per strength tried); ``train_accuracy`` (percent, of the final
    head on all the data); ``n_train``, ``n_holdout``."""

    weight: Tensor
    bias: Tensor
    loss: str
    l2: float
    holdout_accuracy: float | None
    grid: list[tuple[float, float, float]]
    train_accuracy: float
    n_train: int
    n_holdout: int

    def linear(self) -> nn.Linear:
        """The head as an ``nn.Linear`` (K -> C), on the features' device.

        Example:
            >>> f = LinearFit(torch.ones(2, 3), torch.zeros(2), "svm", 1e-3, None, [], 50.0, 4, 0)
            >>> f.linear().weight.shape
            torch.Size([2, 3])
        """
        c, k = self.weight.shape
        lin = nn.Linear(k, c, device=self.weight.device)
        with torch.no_grad():
            lin.weight.copy_(self.weight)
            lin.bias.copy_(self.bias)
        return lin


def check_labels(labels: Tensor, num_classes: int, classes: Sequence[str] | None = None) -> None:
    """Labels fit for a head of ``num_classes``: at least two classes, each with an image, every
    label in ``0 .. num_classes - 1``; otherwise a :class:`~camviz.errors.DatasetError` says
    which.

    Example:
        >>> check_labels(torch.tensor([0, 0, 2]), 3, ["cat", "dog", "owl"])
        Traceback (most recent call last):
        ...
        camviz.errors.DatasetError: class 1 (dog) has no image: every class needs images ...
    """
    names = list(classes) if classes is not None else [f"class {i}" for i in range(num_classes)]
    if len(labels) and bool((labels < 0).all()):
        raise DatasetError("the images have no labels: give one sub-folder per class (ImageFolder "
                           "layout), a metadata folder with class_labels.txt, or a demo split")
    if num_classes < 2:
        raise DatasetError(f"a head needs at least two classes, got {num_classes} "
                           f"({', '.join(names) or 'none'}); add a folder of images per class")
    bad = (labels < 0) | (labels >= num_classes)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise DatasetError(f"{int(bad.sum())} labels are outside 0..{num_classes - 1} (the "
                           f"classes), e.g. row {i} of the labels is {int(labels[i])}; leave out "
                           "the rows without one of the classes (fit_head does so, reporting "
                           "each item)")
    counts = torch.bincount(labels, minlength=num_classes)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        c = empty[0]
        raise DatasetError(f"class {c} ({names[c]}) has no image: every class needs images "
                           f"({len(empty)} empty); add some or leave the class out")


def _split(labels: Tensor, holdout: float, seed: int) -> tuple[Tensor, Tensor]:
    """A stratified, seeded split: about ``holdout`` of each class held out, at least one image of
    a class with two or more, and at least one left to train on."""
    g = torch.Generator().manual_seed(seed)
    y = labels.cpu()
    train, held = [], []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = min(max(round(holdout * len(idx)), 1), len(idx) - 1) if holdout > 0 else 0
        held.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(held).sort().values


def _losses(logits: Tensor, y: Tensor, loss: str) -> Tensor:
    """The data term: the mean cross-entropy, or the sum over classes of the mean squared hinge."""
    if loss == "softmax":
        return F.cross_entropy(logits, y)
    t = torch.where(F.one_hot(y, logits.shape[1]).bool(), 1.0, -1.0).to(logits.dtype)
    return F.relu(1.0 - t * logits).square().mean(0).sum()


def _scale(x: Tensor) -> tuple[Tensor, Tensor]:
    mu = x.mean(0)
    s = (x - mu).square().sum(1).mean().sqrt().clamp_min(torch.finfo(x.dtype).tiny)
    return mu, s


def _solve(x: Tensor, y: Tensor, c: int, loss: str, l2: float,
           init: tuple[Tensor, Tensor] | None, max_iter: int, tol: float) -> tuple[Tensor, Tensor]:
    """Minimise the objective (module doc) with L-BFGS on centred features scaled to unit mean
    squared norm, where ``l2`` is the plain L2 weight; returns W (C, K), b (C,) in the
    features' units. ``init``: a warm start (W, b), in the features' units."""
    mu, s = _scale(x)
    z = (x - mu) / s
    if init is None:
        v = torch.zeros(c, x.shape[1], dtype=x.dtype, device=x.device)
        b = torch.zeros(c, dtype=x.dtype, device=x.device)
    else:  # logits = W x + b = (W s) z + (b + W mu)
        v, b = init[0] * s, init[1] + init[0] @ mu
    v, b = v.clone().requires_grad_(True), b.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([v, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        total = _losses(z @ v.T + b, y, loss) + 0.5 * l2 * v.square().sum()
        total.backward()
        return total

    with torch.enable_grad():
        opt.step(closure)
    w = v.detach() / s
    return w, b.detach() - w @ mu


def _score(x: Tensor, y: Tensor, w: Tensor, b: Tensor, loss: str) -> tuple[float, float]:
    """Accuracy (percent) and the data term of a head on (x, y)."""
    logits = x @ w.T + b
    return float((logits.argmax(1) == y).to(x.dtype).mean() * 100), float(_losses(logits, y, loss))


def fit_linear(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    loss: str = "softmax",
    l2: float | Sequence[float] | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    max_iter: int = 500,
    tol: float = 1e-5,
    classes: Sequence[str] | None = None,
    progress: bool = False,
) -> LinearFit:
    """Fit a linear head on features ``x`` (N, K) with labels ``y`` (N,), on ``x``'s device and
    in its dtype (see the module doc for the objective).

    ``l2``: one strength, or several to choose from (default :data:`DEFAULT_L2`): each is fitted
    on the training part, the best held-out accuracy wins (ties: the lower held-out loss), and
    the winner is refitted on all the data. ``holdout``: the fraction held out per class (seeded
    by ``seed``); 0 fits one given ``l2`` on everything. ``max_iter`` / ``tol``: L-BFGS
    iterations per fit and the gradient tolerance (in the scaled units). ``classes`` only names
    classes in errors.

    Example:
        >>> fit_linear(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 1)
        Traceback (most recent call last):
        ...
        camviz.errors.DatasetError: a head needs at least two classes, got 1 (class 0); ...
    """
    if loss not in LOSSES:
        raise CamvizError(f"loss must be one of {LOSSES}, got {loss!r}")
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise CamvizError(f"features must be (N, K) and labels (N,), got {tuple(x.shape)} and "
                          f"{tuple(y.shape)}")
    if not x.is_floating_point() or not bool(torch.isfinite(x).all()):
        raise CamvizError("features must be finite floats (NaN or infinity in the pooled "
                          "features: check the network and the images)")
    if not 0 <= holdout < 1:
        raise CamvizError(f"holdout must be in [0, 1), got {holdout}")
    y = y.to(device=x.device, dtype=torch.int64)
    check_labels(y, num_classes, classes)
    grid = [float(v) for v in ((l2,) if isinstance(l2, (int, float)) else (l2 or DEFAULT_L2))]
    if any(not v > 0 for v in grid):
        raise CamvizError(f"l2 strengths must be > 0, got {grid}")
    train, held = _split(y, holdout, seed)
    if len(grid) > 1 and len(held) == 0:
        raise CamvizError("no image can be held out to choose l2 (one image per class, or "
                          "holdout=0); give one l2, or more images")
    from tqdm.auto import tqdm  # on use: tqdm.auto loads ipywidgets, and import camviz is light

    grid = sorted(grid, reverse=True)  # strongest first: each fit warm-starts the next
    bar = tqdm(total=len(grid) + 1 if len(held) else 1, desc=f"camviz fit-head ({loss})",
               file=sys.stderr, disable=not progress)
    with bar, _threads_for(x, num_classes):
        scores: list[tuple[float, float, float]] = []
        fits: list[tuple[Tensor, Tensor]] = []
        if len(held):
            tr, ho = train.to(x.device), held.to(x.device)
            for v in grid:
                fits.append(_solve(x[tr], y[tr], num_classes, loss, v,
                                   fits[-1] if fits else None, max_iter, tol))
                scores.append((v, *_score(x[ho], y[ho], *fits[-1], loss)))
                bar.update(1)
        best = min(range(len(grid)), key=lambda i: (-scores[i][1], scores[i][2], -grid[i])) \
            if scores else 0
        w, b = _solve(x, y, num_classes, loss, grid[best], fits[best] if fits else None,
                      max_iter, tol)
        bar.update(1)
        train_acc = _score(x, y, w, b, loss)[0]
    return LinearFit(w, b, loss, grid[best], scores[best][1] if scores else None, scores,
                     train_acc, len(y) - len(held), len(held))


#: Below this many multiply-adds per product (N x K x C), a CPU fit runs on one thread.
SMALL_FIT = 1 << 22


def _threads_for(x: Tensor, num_classes: int) -> AbstractContextManager[None]:
    """One intra-op thread for a small fit on the CPU: L-BFGS on a few hundred vectors is
    thousands of tiny products (see :func:`camviz.hooks.torch_threads`). Large fits keep every
    thread."""
    small = x.device.type == "cpu" and x.shape[0] * x.shape[1] * num_classes < SMALL_FIT
    return torch_threads(1) if small else nullcontext()
