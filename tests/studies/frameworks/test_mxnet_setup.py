"""The MXNet environment comes from the project's own setup script, which leaves a ready one alone."""
from __future__ import annotations

import subprocess

from tests.studies.frameworks.conftest import require_mxnet
from train.studies.frameworks.mxnet_engine import REPO


def test_setup_mxnet_is_idempotent():
    require_mxnet()
    done = subprocess.run(["bash", str(REPO / ".ci" / "setup-mxnet")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "installing" not in done.stderr  # a ready environment is reused, not rebuilt
    probe = subprocess.run([str(REPO / ".venv-mxnet" / "bin" / "python"), "-c",
                            "import mxnet, numpy; print(mxnet.__version__, numpy.__version__)"],
                           capture_output=True, text=True, timeout=120)
    mxnet_version, numpy_version = probe.stdout.split()
    assert mxnet_version == "1.9.1" and tuple(map(int, numpy_version.split(".")[:2])) < (1, 24)
