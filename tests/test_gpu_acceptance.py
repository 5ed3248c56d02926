"""benchmarks/gpu_acceptance.py where there is no CUDA device: it says so and succeeds, and writes nothing."""
import os
import subprocess
import sys

from tests.workspace import REPO

SCRIPT = str(REPO / "benchmarks" / "gpu_acceptance.py")
NO_CUDA = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the same answer on a machine that has one


def test_without_cuda_it_says_skipped_and_exits_0(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path / "table")], env=NO_CUDA,
                          capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout) == (0, "skipped: no CUDA device\n"), proc.stderr
    assert not (tmp_path / "table").exists()


def test_bad_flag_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, SCRIPT, "--repeats", "0"], env=NO_CUDA, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--repeats" in proc.stderr, proc.stderr
