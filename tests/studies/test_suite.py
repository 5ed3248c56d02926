"""``cnnbench suite``: a YAML grid run point by point through the launchers, resumable, with one-line errors."""
from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workspace import REPO, Workspace
from train import cli
from train.engine.config import config_from_args
from train.engine.launch import training_parser
from train.studies.published import read_reference
from train.studies.suite import POINT_TAG, SUITE_TAG, engine_flags, load_suite

CNNBENCH = str(Path(sys.executable).with_name("cnnbench"))
SMOKE = REPO / "configs" / "smoke.yaml"


def cnnbench(capsys, *argv: str) -> tuple[int, str, str]:
    """``cnnbench ARGV`` in this process: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


@pytest.mark.slow
def test_smoke_suite_killed_after_its_first_point_runs_only_the_rest_again(tmp_path):
    smoke = load_suite(SMOKE)
    points = smoke.points
    ws = Workspace(tmp_path)  # the suite's default store, sqlite:///mlflow.db in its working directory
    suite = subprocess.Popen([CNNBENCH, "suite", "run", str(SMOKE)], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    progress = []
    for line in suite.stderr:
        progress.append(line)
        if line.startswith(f"[1/{len(points)}] ") and ": ok (" in line:
            suite.send_signal(signal.SIGTERM)
            break
    progress += suite.communicate(timeout=300)[1].splitlines()
    assert suite.returncode == 143, progress  # 128 + SIGTERM
    assert f"[1/{len(points)}] {smoke.run_names[points[0].key]} ...\n" in progress  # named as it starts
    first = ws.runs("smoke")
    (done,) = [r for r in first if r.info.status == "FINISHED"]
    assert {r.info.status for r in first} <= {"FINISHED", "KILLED"}  # the point stopped mid-way is closed

    again = subprocess.run([CNNBENCH, "suite", "run", str(SMOKE)], cwd=tmp_path, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stderr
    assert f"1 already finished, {len(points) - 1} to run" in again.stderr
    assert f"{len(points)} of {len(points)} points now have a FINISHED run" in again.stderr
    finished = [r for r in ws.runs("smoke") if r.info.status == "FINISHED"]
    assert sorted(r.data.tags[POINT_TAG] for r in finished) == sorted(p.key for p in points)
    assert {r.data.tags[SUITE_TAG] for r in finished} == {"smoke"}
    assert done.info.run_id in {r.info.run_id for r in finished}  # not run again
    for run in finished:  # each run trained what its point says
        settings = json.loads(run.data.tags[POINT_TAG])
        assert (run.data.params["arch"], run.data.params["batch_size"]) == (settings["arch"],
                                                                            str(settings["batch_size"]))


LAUNCH_GRID = """\
name: plan-test
settings: {dataset: digits, epochs: 2}
grid:
  launch:
    - {launcher: single}
    - {launcher: ddp, world_size: 2}
    - {launcher: horovod, world_size: 4}
  batch_size: [16, 32]
"""


def test_plan_prints_one_argument_list_per_point_through_its_launcher(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text(LAUNCH_GRID)
    code, out, err = cnnbench(capsys, "suite", "plan", str(path))
    assert code == 0
    assert "6 points = launch 3 × batch_size 2" in err
    commands = [shlex.split(line) for line in out.splitlines()]
    assert len(commands) == 6
    for command in commands:
        point = json.loads(_flag_values(command, "--tag")[1].removeprefix(f"{POINT_TAG}="))
        launcher, n = point["launcher"], point["world_size"]
        script = str(REPO / "launchers" / f"{launcher}.py")
        head = {"single": [sys.executable, script],
                "ddp": ["torchrun", "--standalone", f"--nproc_per_node={n}", script],
                "horovod": ["horovodrun", "-np", str(n), sys.executable, script]}[launcher]
        program = command[0] if launcher == "single" else Path(command[0]).name
        assert [program, *command[1:len(head)]] == head
        assert _flag_values(command, "--tag")[0] == f"{SUITE_TAG}=plan-test"
        assert _flag_values(command, "--batch-size") == [str(point["batch_size"])]
        assert _flag_values(command, "--experiment") == ["plan-test"]
    assert len({tuple(c) for c in commands}) == 6


def _flag_values(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, word in enumerate(command) if word == flag]


def test_dry_run_shows_the_grid_size_and_runs_nothing(tmp_path, capsys):
    ws = Workspace(tmp_path)
    path = tmp_path / "grid.yaml"
    path.write_text(LAUNCH_GRID)
    code, out, err = cnnbench(capsys, "suite", "run", str(path), "--dry-run", "--tracking-uri", ws.uri)
    assert code == 0
    assert "6 points = launch 3 × batch_size 2; 0 already finished, 6 to run" in err
    assert len(out.splitlines()) == 6
    assert ws.runs("plan-test") == []


def test_every_shipped_suite_loads_with_distinct_points_and_run_names():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        suite = load_suite(path)
        assert len({p.key for p in suite.points}) == len(suite.points) > 0, path
        assert len(set(suite.run_names.values())) == len(suite.points), path


def test_plan_names_each_run_by_its_net_and_what_tells_it_apart(capsys):
    code, out, _ = cnnbench(capsys, "suite", "plan", str(SMOKE))
    assert code == 0
    assert [_flag_values(shlex.split(line), "--run-name") for line in out.splitlines()] == [
        ["resnet-20 batch_size=32"], ["resnet-20 batch_size=64"], ["alexnet batch_size=32"], ["alexnet batch_size=64"]]


@pytest.mark.parametrize("grid, names", [
    ("grid:\n  arch: [resnet-20, alexnet]\n  batch_size: [16]\nrepeat: 2\n",  # one batch size: not named
     ["resnet-20 seed=0", "alexnet seed=0", "resnet-20 seed=1", "alexnet seed=1"]),  # the seed last
    ("grid:\n  precision: [fp32, bf16]\n  model:\n    - {arch: resnet-20, epochs: 2, lr: 0.1}\n"
     "    - {arch: alexnet, epochs: 2, lr: 0.01}\n",  # the same epochs in every bundle: not named
     ["resnet-20 precision=fp32 lr=0.1", "alexnet precision=fp32 lr=0.01", "resnet-20 precision=bf16 lr=0.1",
      "alexnet precision=bf16 lr=0.01"]),
    ("grid:\n  model:\n    - {arch: alexnet}\n    - {arch: alexnet, epochs: 2}\n",  # short names would clash
     ["alexnet", "alexnet epochs=2"]),
])
def test_run_names_give_the_settings_that_differ_between_points(tmp_path, grid, names):
    path = tmp_path / "named.yaml"
    path.write_text("settings: {dataset: digits}\n" + grid)
    suite = load_suite(path)
    assert [suite.run_names[p.key] for p in suite.points] == names


def test_cifar_table_covers_every_published_net_on_both_data_sets_with_its_recipe():
    points = load_suite(REPO / "configs" / "cifar_table.yaml").points
    planned = {(p.settings["arch"], p.settings.get("recipe", ""), p.settings["dataset"]) for p in points}
    published = {(row["arch"], row["recipe"], ds) for row in read_reference("cifar_published")
                 for ds in ("cifar10", "cifar100")}
    assert planned == published


def test_a_recipe_keeps_its_values_where_the_point_sets_none():
    points = load_suite(REPO / "configs" / "cifar_table.yaml").points
    wrn = next(p for p in points if p.settings["arch"] == "wrn-28-10")
    cfg = config_from_args(training_parser("t", "").parse_args(engine_flags(wrn.settings)))
    assert (cfg.epochs, cfg.milestones, cfg.gamma, cfg.weight_decay, cfg.dropout) == (200, (60, 120, 160), 0.2,
                                                                                       5e-4, 0.3)


REPEATED = """\
name: repeated
settings: {{dataset: digits, epochs: 1{seed}}}
grid:
  arch: [resnet-20, alexnet]
  batch_size: [16, 32]
repeat: 3
"""


@pytest.mark.parametrize("seed, first", [("", 0), (", seed: 5", 5)])
def test_repeat_runs_every_point_with_n_seeds_all_points_once_before_any_twice(tmp_path, seed, first):
    path = tmp_path / "repeated.yaml"
    path.write_text(REPEATED.format(seed=seed))
    suite = load_suite(path)
    assert suite.size == "12 points = repeat 3 × arch 2 × batch_size 2"
    seeds = [p.settings["seed"] for p in suite.points]
    assert seeds == [first] * 4 + [first + 1] * 4 + [first + 2] * 4  # one pass over the grid per seed
    grid = [(p.settings["arch"], p.settings["batch_size"]) for p in suite.points]
    assert grid[:4] == grid[4:8] == grid[8:] and len(set(grid)) == 4
    assert len({p.key for p in suite.points}) == 12  # each repeat is its own point, with its own run
    assert all("seed" in p.varied for p in suite.points)
    assert [engine_flags(p.settings).count("--seed") for p in suite.points] == [1] * 12


ONE_SETTING = """\
name: grown
settings: {dataset: digits, epochs: 1, batch_size: 32}
grid:
  arch: [resnet-20]
"""


@pytest.mark.parametrize("tagged", ["as the suite tags it now", "as tagged before the key held the seed"])
def test_adding_repeat_to_a_suite_that_ran_keeps_its_run_as_the_default_seeds_repeat(tmp_path, capsys, tagged):
    """Issue 21: the run of a suite without ``repeat`` is the seed-0 repeat once ``repeat: 3`` is added; it used
    to count as another point, and seed 0 trained again ("0 already finished, 3 to run")."""
    from mlflow import MlflowClient

    ws = Workspace(tmp_path)
    path = tmp_path / "grown.yaml"
    path.write_text(ONE_SETTING)
    (point,) = load_suite(path).points
    key = point.key if tagged == "as the suite tags it now" else json.dumps(point.settings, sort_keys=True,
                                                                            separators=(",", ":"))
    client = MlflowClient(ws.uri)
    run = client.create_run(client.create_experiment("grown"), tags={SUITE_TAG: "grown", POINT_TAG: key})
    client.set_terminated(run.info.run_id, "FINISHED")
    path.write_text(ONE_SETTING + "repeat: 3\n")
    code, out, err = cnnbench(capsys, "suite", "run", str(path), "--dry-run", "--tracking-uri", ws.uri)
    assert code == 0 and "3 points = repeat 3 × arch 1; 1 already finished, 2 to run" in err
    assert [_flag_values(shlex.split(line), "--seed") for line in out.splitlines()] == [["1"], ["2"]]


BAD_SUITES = {
    "repeat not a count": ("grid: {arch: [resnet-20]}\nrepeat: 0\n", 2, "repeat", "not a number of repeats"),
    "repeat of a grid of seeds": ("grid:\n  seed: [0, 1]\nrepeat: 2\n", 3, "repeat", "the grid sets seed already"),
    "unknown top-level key": ("nme: x\ngrid: {arch: [resnet-20]}\n", 1, "nme", "did you mean name"),
    "unknown setting": ("settings:\n  epochs: 1\n  batchsize: 32\ngrid: {arch: [resnet-20]}\n", 3, "batchsize",
                        "did you mean batch_size"),
    "unknown axis": ("grid:\n  arch: [resnet-20]\n  lerning_rate: [0.1]\n", 3, "lerning_rate", "unknown setting"),
    "unknown arch": ("grid:\n  arch:\n    - resnet-20\n    - resnet-111\n", 4, "arch", "unknown arch 'resnet-111'"),
    "unknown arch in a bundle": ("grid:\n  model:\n    - {arch: resnet-164, recipe: resnet-110}\n"
                                 "    - {arch: wrn-28-11}\n", 4, "arch", "unknown arch 'wrn-28-11'"),
    "unknown recipe": ("grid:\n  recipe: [resnet-110, resnet-111]\n", 2, "recipe", "unknown recipe 'resnet-111'"),
    "bad value": ("grid:\n  precision: [fp32, fp8]\n", 2, "precision", "invalid choice: 'fp8'"),
    "empty axis": ("name: e\ngrid:\n  arch: []\n", 3, "arch", "empty list"),
    "empty grid": ("name: e\ngrid: {}\n", 2, "grid", "empty"),
    "no grid": ("name: e\nsettings: {epochs: 1}\n", 1, "grid", "missing"),
    "one process, two workers": ("grid:\n  world_size: [1, 2]\n", 1, "grid", "launcher single runs 1 process"),
    "set twice": ("settings: {batch_size: 32}\ngrid:\n  batch_size: [64]\n", 3, "batch_size", "settings sets"),
    "suite-owned key": ("settings: {tracking_uri: x}\ngrid: {arch: [resnet-20]}\n", 1, "tracking_uri",
                        "set by the suite"),
    "not YAML": ("grid:\n  arch: [resnet-20\n", 3, "", "not valid YAML"),
    "recursive alias": ("settings: &a {epochs: *a}\ngrid: {arch: [resnet-20]}\n", 1, "",
                        "found unconstructable recursive node"),
    "python tag": ("settings: {epochs: !!python/object/apply:os.getpid []}\ngrid: {arch: [resnet-20]}\n", 1, "",
                   "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.getpid'"),
    "repeated value": ("grid:\n  arch: [resnet-20, resnet-32]\n  batch_size:\n    - 32\n    - 64\n    - 32\n", 6,
                       "batch_size", "32 given twice (first on line 4)"),
    "repeated bundle": ("grid:\n  model:\n    - {arch: resnet-20, batch_size: 32}\n    - {batch_size: 32, arch: resnet-20}\n",
                        4, "model", "arch=resnet-20 batch_size=32 given twice (first on line 3)"),
    # 102.4 M points: counted before they are made (made, they filled the memory for minutes)
    "too many points": ("grid:\n" + "".join(f"  {axis}: [{', '.join(str(i) for i in range(1, 41))}]\n"
                                            for axis in ("epochs", "batch_size", "seed", "warmup_steps", "workers")),
                        1, "grid", "102,400,000 points (epochs 40 × batch_size 40 × seed 40 × warmup_steps 40 × "
                                   "workers 40), over the 10,000 a suite may have"),
}


@pytest.mark.parametrize("case", sorted(BAD_SUITES))
def test_a_bad_suite_file_is_one_line_naming_line_and_key_and_exit_2(tmp_path, capsys, case):
    text, line, key, message = BAD_SUITES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, out, err = cnnbench(capsys, "suite", "plan", str(path))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"cnnbench: error: {path}:{line}: {key}"), err
    assert message in err


def test_a_python_tag_in_a_suite_file_runs_nothing(tmp_path, capsys):
    made = tmp_path / "made-by-yaml"
    path = tmp_path / "bad.yaml"
    path.write_text(f"settings: {{epochs: !!python/object/apply:os.mkdir [{str(made)!r}]}}\ngrid: {{arch: [resnet-20]}}\n")
    for action in (["run", "--dry-run"], ["plan"]):
        code, out, err = cnnbench(capsys, "suite", *action, str(path))
        assert code == 2 and out == "" and err.count("\n") == 1 and "could not determine a constructor" in err, err
    assert not made.exists()


def test_a_log_dir_that_is_a_file_is_one_line_before_any_point_runs(ws, capsys):
    suite, log_dir = ws.root / "one.yaml", ws.root / "taken"
    suite.write_text("settings: {dataset: digits, epochs: 1}\ngrid: {arch: [resnet-20]}\n")
    log_dir.write_text("a file\n")
    code, out, err = cnnbench(capsys, "suite", "run", str(suite), "--log-dir", str(log_dir), "--tracking-uri", ws.uri)
    assert code == 2 and out == ""
    assert err == f"cnnbench: error: --log-dir {log_dir} is a file, not a folder: give a folder for the output\n"
    assert ws.runs("one") == [] and log_dir.read_text() == "a file\n"


def test_a_missing_suite_file_is_one_line_and_exit_2(tmp_path, capsys):
    code, _, err = cnnbench(capsys, "suite", "run", str(tmp_path / "nope.yaml"))
    assert code == 2 and err.count("\n") == 1 and "nope.yaml" in err


def test_a_suite_file_that_is_not_utf8_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    code, _, err = cnnbench(capsys, "suite", "plan", str(path))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"cnnbench: error: cannot read suite file {path}: not UTF-8 text")


def test_tag_flag_takes_key_value_pairs(capsys):
    parser = training_parser("launcher", "")
    cfg = config_from_args(parser.parse_args(["--tag", "study=a=b", "--tag", "cnnbench.point=x"]))
    assert cfg.run_tags == {"study": "a=b", "cnnbench.point": "x"}
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--tag", "novalue"])
    assert exited.value.code == 2
    assert "'novalue' is not KEY=VALUE" in capsys.readouterr().err
