"""What a run ran on: versions, hardware and the code's git commit, as MLflow params."""
from __future__ import annotations

import getpass
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _git(*args: str, repo: Path = REPO) -> str | None:
    """A git command's output in the cnnbench checkout; None outside one, or where git cannot tell."""
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_sha(repo: Path = REPO) -> str:
    """HEAD's commit, with '-dirty' when tracked files differ from it; 'unknown' outside a checkout."""
    sha = _git("rev-parse", "HEAD", repo=repo)
    dirty = _git("status", "--porcelain", "--untracked-files=no", repo=repo)
    if sha is None or dirty is None:
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment and none for this uid (some containers)
        return None


def mlflow_source_tags(repo: Path = REPO) -> dict[str, str]:
    """The tags MLflow itself defines for where a run comes from, so that its UI shows them: the user, and the
    commit, branch and repository of the code (those git cannot tell are left out)."""
    tags = {"mlflow.user": _user(), "mlflow.source.git.commit": _git("rev-parse", "HEAD", repo=repo),
            "mlflow.source.git.branch": _git("rev-parse", "--abbrev-ref", "HEAD", repo=repo),
            "mlflow.source.git.repoURL": _git("config", "--get", "remote.origin.url", repo=repo)}
    return {key: value for key, value in tags.items() if value}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def environment_params(device: torch.device) -> dict:
    cudnn = torch.backends.cudnn.version() if device.type == "cuda" else None
    return {
        "device": device.type,
        "device_name": device_name(device),
        "num_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "torchvision_version": _version("torchvision"),
        "timm_version": _version("timm"),
        "mlflow_version": _version("mlflow"),
        "cuda_version": torch.version.cuda or "none",
        "cudnn_version": cudnn or "none",
        "git_sha": git_sha(),
    }
