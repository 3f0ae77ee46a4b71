"""Fixtures for the data tests: real galaxy pixels and the real data files beside the repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from galaxalign.data.demo import DEMO_DIR

REPOSITORY = Path(__file__).resolve().parents[2]
SHARED_DATA = REPOSITORY.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """Return the folder of real data files beside the repository, or skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: a clone of the repository has no shared data folder")
    return SHARED_DATA


@pytest.fixture(scope="session")
def galaxies() -> np.ndarray:
    """Return 12 real galaxies of the bundled demo set as (12, 96, 96, 3) uint8, decoded by Pillow."""
    paths = sorted((DEMO_DIR / "images").glob("*.jpeg"))[:12]
    decoded = []
    for path in paths:
        with Image.open(path) as image:
            decoded.append(np.asarray(image.convert("RGB")))
    return np.stack(decoded)
