"""Shared fixtures: small random-weight networks and image files of every awkward kind."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import settings
from torch import nn

import camviz

# `make test` explores the same examples on every run (a property test that found a new
# counterexample on one run in five would make CI flaky); HYPOTHESIS_PROFILE=hunt explores
# new random examples, many of them, to look for bugs.
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("hunt", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def tiny_net() -> camviz.GapNet:
    """A 3-layer conv GAP network with 5 classes, random but fixed weights, on the CPU."""
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 12, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    return camviz.GapNet(
        features,
        nn.Linear(12, 5),
        classes=list("abcde"),
        device="cpu",
        transform=camviz.Preprocess(resize=(32, 32)),
    )


@pytest.fixture
def rgb_image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.random((40, 48, 3)) * 255).astype(np.uint8)
