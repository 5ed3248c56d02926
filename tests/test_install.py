"""Installing: supported ranges in setup.cfg, CI's exact versions in one lock, the floor stated alike everywhere;
.ci/setup from a wheel folder with no index, and into a Python whose torch it must keep.

The install tests run the real .ci/setup on a stub project (tiny dependencies, wheels made here) in a temporary
folder: what they install takes seconds, not torch; and no package index is reachable (pip's configuration and
environment are left out, its index pointed at a closed port).
"""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.workspace import REPO

LOCK = REPO / ".ci" / "constraints.txt"
OFFLINE = {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")},
           "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def requirements() -> list[Requirement]:
    """setup.cfg's requirements and extras, less the extras that name cnnbench's own."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    lines += [line for extra in cfg["options.extras_require"].values() for line in extra.splitlines()]
    found = [Requirement(line) for line in lines if line.strip()]
    return [r for r in found if r.name != "cnnbench"]


def lock() -> dict[str, str]:
    pins = [line.split("==") for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pins}


def floor(name: str) -> str:
    (spec,) = [s for r in requirements() if r.name == name for s in r.specifier if s.operator == ">="]
    return spec.version


def test_setup_cfg_states_ranges_and_the_lock_pins_a_version_inside_each():
    pins = lock()
    for req in requirements():
        pinned = pins[canonicalize_name(req.name)]
        assert not any(s.operator in ("==", "===", "~=") for s in req.specifier), f"{req}: a range, not a pin"
        assert req.specifier.contains(pinned, prereleases=True), f"{req} leaves out the lock's {pinned}"


def test_the_environment_running_the_tests_is_exactly_the_lock():
    """What .ci/setup installed is all pinned: a dependency added without its pins would drift between CI runs."""
    pins = lock()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    installed.pop("cnnbench")
    assert {name: (version, pins.get(name)) for name, version in installed.items() if pins.get(name) != version} == {}


@pytest.mark.parametrize("page", ["README.md", "docs/install.md"])
def test_the_supported_torch_range_is_stated_alike_in_setup_cfg_and_the_docs(page):
    text = " ".join((REPO / page).read_text().split())  # a sentence may be wrapped anywhere
    python_floor = re.search(r"python_requires = >=(\S+)", (REPO / "setup.cfg").read_text())[1]
    stated = re.search(r"supports \*\*torch (\S+) or newer\*\* \(torchvision (\S+) or newer\) on Python (\S+) or newer",
                       text)
    assert stated and stated.groups() == (floor("torch"), floor("torchvision"), python_floor)


# --- .ci/setup on a stub project ---

def write_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = (), init: str = "") -> None:
    """The wheel of a package whose ``__init__.py`` is ``init``: what pip needs to install one, nothing more."""
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": init,
             f"{info}/METADATA": "".join(f"{line}\n" for line in ("Metadata-Version: 2.1", f"Name: {name}",
                                                                    f"Version: {version}",
                                                                    *(f"Requires-Dist: {r}" for r in requires))),
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: cnnbench-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


def repack_wheel(folder: Path, name: str) -> None:
    """A wheel of a pure-Python distribution installed here, from its installed files (its RECORD lists them)."""
    dist = metadata.distribution(name)
    with zipfile.ZipFile(folder / f"{name}-{dist.version}-py3-none-any.whl", "w") as wheel:
        for path in dist.files:
            if "__pycache__" not in path.parts and Path(dist.locate_file(path)).is_file():
                wheel.write(dist.locate_file(path), str(path))


@pytest.fixture
def stub(tmp_path) -> Path:
    """A project that .ci/setup installs like cnnbench: setup.cfg ranges, a lock, the setup scripts themselves."""
    project = tmp_path / "project"
    (project / ".ci").mkdir(parents=True)
    (project / "stub").mkdir()
    (project / "stub" / "__init__.py").touch()
    for script in ("setup", "fill-wheels", "dali-requirement", "here-keeps.txt"):
        shutil.copy(REPO / ".ci" / script, project / ".ci" / script)
    (project / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    (project / "setup.cfg").write_text("[metadata]\nname = stub\nversion = 1.0\n[options]\npackages = stub\n"
                                       "install_requires =\n    torch>=2.4\n    tinydep>=1.0\n"
                                       "[options.extras_require]\npytest =\n    tinytest>=1.0\n"
                                       'dali =\n    nvidia-dali-cuda120>=2.4.0; platform_system == "Linux"\n')
    (project / ".ci" / "constraints.txt").write_text("# CI's versions\ntorch==2.6.0\ntinydep==1.1\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name, version in [("torch", "9.0"), ("tinydep", "1.0"), ("tinydep", "1.1"), ("tinydep", "2.0"),
                          ("tinytest", "1.0"), ("nvidia_cublas", "13.1.1.3")]:
        write_wheel(wheels, name, version)
    write_wheel(wheels, "torch", "2.6.0", requires=("nvidia-cublas",), init=torch_built_for(None))  # a CPU build
    repack_wheel(wheels, "setuptools")  # pip builds the editable project with it
    return project


def torch_built_for(cuda: str | None) -> str:
    """A stub torch's ``__init__.py``: only ``torch.version.cuda``, what .ci/setup --gpu asks of it."""
    return f"from types import SimpleNamespace\n\nversion = SimpleNamespace(cuda={cuda!r})\n"


def write_dali_wheels(folder: Path, cuda: str) -> None:
    """DALI's build for a CUDA major (12 or 13) and the CUDA library it brings, as DALI's wheels do."""
    codec = f"nvidia_nvimgcodec_cu{cuda}"
    write_wheel(folder, codec, "0.9.0")
    write_wheel(folder, f"nvidia_dali_cuda{cuda}0", "2.4.0", requires=(codec.replace("_", "-"),))


def setup(project: Path, *args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    env = {**OFFLINE, "PYTHON": python}
    return subprocess.run(["bash", ".ci/setup", *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=600)


def installed(python: Path) -> set[str]:
    listing = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], env=OFFLINE,
                             capture_output=True, text=True, check=True).stdout
    return {f"{canonicalize_name(name)}=={version}" for name, version in (line.split("==") for line in listing.split())}


def test_setup_installs_the_locked_versions_from_a_wheel_folder_without_an_index(stub):
    proc = setup(stub, "--wheels", "../wheels")
    assert proc.returncode == 0, proc.stderr
    # the lock's versions, though the folder has newer ones; and pytest, for benchmarks/gpu_acceptance.py
    assert {"stub==1.0", "torch==2.6.0", "tinydep==1.1", "tinytest==1.0"} <= installed(stub / ".venv" / "bin" / "python")

    proc = setup(stub, "--gpu", "--wheels", "../wheels")  # its torch a CPU build: no CUDA to match DALI to
    assert proc.returncode == 2 and "is a CPU build" in proc.stderr.splitlines()[-1], proc.stderr


@pytest.mark.slow  # two venvs' worth of installs: about 40 s
def test_here_keeps_the_torch_of_the_python_it_installs_into(stub, tmp_path):
    machine = tmp_path / "machine"  # a container's Python: its torch a pre-release with a local tag, as NGC's are
    subprocess.run([sys.executable, "-m", "venv", str(machine)], check=True)
    python = machine / "bin" / "python"
    proc = setup(stub, "--here", "--wheels", "../wheels", python=str(python))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "which has none" in proc.stderr

    write_wheel(tmp_path, "torch", "2.5.0a0+nv24.10", init=torch_built_for("13.0"))
    subprocess.run([str(python), "-m", "pip", "install", "--no-index", "--find-links", str(tmp_path), "torch"],
                   env=OFFLINE, check=True, capture_output=True)
    proc = setup(stub, "--here", "--wheels", "../wheels", python=str(python))
    assert proc.returncode == 0, proc.stderr
    # its own torch kept, the rest within setup.cfg's ranges (the lock is CI's, not this machine's); no .venv
    assert {"stub==1.0", "torch==2.5.0a0+nv24.10", "tinydep==2.0", "tinytest==1.0"} <= installed(python)
    assert not (stub / ".venv").exists()

    # --gpu: the DALI build for its torch's CUDA 13, which a wheel folder must hold
    proc = setup(stub, "--here", "--gpu", "--wheels", "../wheels", python=str(python))
    assert proc.returncode == 1 and proc.stderr.splitlines()[-1] == (
        "cnnbench setup: nvidia-dali-cuda130>=2.4.0 did not install from the wheel folder: fill it with "
        "bash .ci/fill-wheels DIR --cuda 13"), proc.stderr
    for cuda in ("12", "13"):
        write_dali_wheels(stub.parent / "wheels", cuda)
    proc = setup(stub, "--here", "--gpu", "--wheels", "../wheels", python=str(python))
    assert proc.returncode == 0, proc.stderr
    assert {"torch==2.5.0a0+nv24.10", "nvidia-dali-cuda130==2.4.0", "nvidia-nvimgcodec-cu13==0.9.0"} <= installed(python)
    assert not any(line.startswith("nvidia-dali-cuda120") for line in installed(python))


@pytest.mark.slow  # two resolutions and a download, with the stub built in an isolated env: 7-15 s
def test_fill_wheels_for_here_and_gpu_holds_dali_and_its_cuda_wheels_not_torchs(stub):
    """Against the stub's wheel folder as the index: the wheels .ci/setup --here --gpu installs on a CUDA 13 node."""
    wheels = stub.parent / "wheels"
    write_dali_wheels(wheels, "13")
    index = {**OFFLINE, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", ".ci/fill-wheels", "../filled", "--here", "--cuda", "13"], cwd=stub, env=index,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1].endswith("bash .ci/setup --here --gpu --wheels ../filled")
    setuptools = metadata.version("setuptools")
    # the lock's tinydep, pytest's stand-in, setuptools, DALI and its codec; not torch, nor torch's nvidia-cublas
    assert sorted(p.name for p in (stub.parent / "filled").iterdir()) == [
        "nvidia_dali_cuda130-2.4.0-py3-none-any.whl", "nvidia_nvimgcodec_cu13-0.9.0-py3-none-any.whl",
        f"setuptools-{setuptools}-py3-none-any.whl", "tinydep-1.1-py3-none-any.whl", "tinytest-1.0-py3-none-any.whl"]


@pytest.mark.parametrize("major", ["12", "13"])
def test_dali_requirement_is_the_build_for_the_cuda_major_at_setup_cfgs_floor(major):
    proc = subprocess.run(["bash", str(REPO / ".ci" / "dali-requirement"), major], capture_output=True, text=True)
    dali = [r for r in requirements() if r.name == "nvidia-dali-cuda120"][0]
    assert proc.stdout == f"nvidia-dali-cuda{major}0{dali.specifier}\n"


@pytest.mark.parametrize("args", [["--bogus"], ["--wheels"], ["--wheels", "no-such-folder"], ["--test", "--here"],
                                  ["--test", "--wheels", "."], ["--test", "--gpu"]])
def test_bad_setup_flags_end_in_one_line_and_exit_2(stub, args):
    proc = setup(stub, *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert not (stub / ".venv").exists()


@pytest.mark.parametrize("script", ["fill-wheels", "check-floor"])
def test_scripts_without_their_folder_say_how_to_call_them(script):
    proc = subprocess.run(["bash", str(REPO / ".ci" / script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith(f"usage: bash .ci/{script} DIR")


@pytest.mark.parametrize("args", [["--cuda"], ["--cuda", "11"]])
def test_fill_wheels_without_a_cuda_major_dali_has_says_so_in_one_line(args, tmp_path):
    proc = subprocess.run(["bash", str(REPO / ".ci" / "fill-wheels"), str(tmp_path), *args], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert not list(tmp_path.iterdir())
