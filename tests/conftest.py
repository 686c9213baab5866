"""Shared fixtures: the repo's paths, the tiny space, and seeded RNGs; scripts/ on sys.path (tiny_assets)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"
if str(REPO / "scripts") not in sys.path:  # the tiny asset makers (scripts/tiny_assets) are not installed
    sys.path.insert(0, str(REPO / "scripts"))


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Every test starts seeded, on one thread: tiny models run fastest so and do not fight for the 2 cores."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def assets() -> Path:
    return ASSETS


@pytest.fixture(scope="session")
def tiny_space():
    from uti.space import TokenSpace

    return TokenSpace.load("tiny")
