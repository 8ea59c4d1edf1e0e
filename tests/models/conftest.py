"""Fixtures for the models room: one tiny real bundle shared by the session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A five-model bundle at 32 px with random backbone weights (built once per session)."""
    from tests.helpers.tiny_bundle import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", image_size=32)


@pytest.fixture(scope="session")
def tiny_engine(tiny_bundle: Path):
    """A float32 engine over the tiny bundle, batch size 4."""
    from models.engine import InferenceEngine

    return InferenceEngine.from_bundle(tiny_bundle, precision="float32", batch_size=4)
