"""Suite-wide rules: tests marked ``gpu`` skip themselves where CUDA is absent; ``ws`` is a fresh workspace."""
import pytest
import torch

from tests.workspace import Workspace


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    """A temp dir with its own sqlite MLflow store and checkpoint folder."""
    return Workspace(tmp_path)
