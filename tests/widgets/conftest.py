"""Fixtures of the widget tests."""

import pytest
from synthetic import synthetic_exploration

from galaxalign.explore import Exploration


@pytest.fixture
def exploration() -> Exploration:
    return synthetic_exploration()
