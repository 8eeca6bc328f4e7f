"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# torch's compiler stack (imported lazily, e.g. by the optimisers) registers handlers for
# builtins such as sys.intern; ansible-core's module utils, loaded by the plugin tests, replace
# sys.intern with a patch object that torch refuses. Load it first, with the real builtins.
import torch._dynamo  # noqa: E402, F401, I001


@pytest.fixture(scope="session")
def signal_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signal model trained once per session (smaller than the shipped one: seconds)."""
    from gekko.signals.train import TrainConfig, write

    path = tmp_path_factory.mktemp("signals") / "signal-model.pt"
    write(path, TrainConfig(samples=8_000, validation_samples=3_000, epochs=6))
    return path
