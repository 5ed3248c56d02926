"""The equivalence matrix: every way a run can go, on every launcher, ends as the uninterrupted run ends.

For each launcher (one process; DDP with 2 ranks under torchrun; Horovod with 2 ranks under horovodrun) and each
way a run can go (uninterrupted; stopped with --stop-after and resumed; finished, then resumed with more --epochs
and the multi-step decay moved with them; under DDP a worker SIGKILLed and the job restarted by torchrun), with
--deterministic and the same seed:

- the final weights are ``torch.equal`` to those of the uninterrupted run of the same launcher;
- the MLflow record holds every epoch metric exactly once, the deterministic ones (losses, errors, lr) equal to
  the uninterrupted run's, and run-level figures over the whole run (train_time_s = the sum of every epoch's
  training and evaluation seconds, best and final errors);
- the logged validation figures are those of the model rank 0 checkpointed (resnet-20 has BatchNorm, whose
  running statistics differ between ranks after an epoch);

and across launchers, one epoch of alexnet, which has neither BatchNorm nor dropout, so that 2 ranks of 10 images
compute what 1 process of 20 does, equals the single-process run up to float summation order (at its small
learning rate the difference stays near 1e-8; at lr 0.05 training amplifies it to 1e-5 within an epoch).
The uninterrupted runs train 2 epochs at one rate (``--milestones 2``); the run resumed with more epochs first
trains 1 epoch with ``--milestones 1``, then resumes with ``--epochs 2 --milestones 2``: its second epoch must not
decay. A lost schedule, momentum buffer or epoch shows in the weights.
"""
from __future__ import annotations

import contextlib
import functools
import signal
import subprocess
import time

import pytest
import torch

from dataloaders import build_loaders
from tests.engine.test_reliability import rank_process
from tests.fakedata import write_cifar10
from tests.workspace import BIN, DDP, Workspace, check_ok, kill_tree
from train.context import DistContext
from train.engine import loop
from train.engine.builders import build_model
from train.engine.checkpoint import find_checkpoint, load_checkpoint
from train.engine.config import make_config
from train.engine.distributed import SingleProcess
from train.engine.schema import EPOCH_METRICS

pytestmark = pytest.mark.slow

EPOCHS = 2
COMMON = ["--dataset", "cifar10", "--seed", "3", "--warmup-steps", "0", "--deterministic", "--no-system-metrics"]
FLAGS = [*COMMON, "--arch", "resnet-20", "--lr", "0.05", "--schedule", "multistep", "--gamma", "0.1"]
DECAY = ["--milestones", str(EPOCHS)]  # after the last epoch: the whole run at one rate
ACROSS_LAUNCHERS = [*COMMON, "--arch", "alexnet", "--lr", "0.01", "--epochs", "1"]
BATCH = {"single": ["--batch-size", "20"], "ddp": ["--global-batch-size", "20"], "horovod": ["--batch-size", "10"]}
SCENARIOS = ("uninterrupted", "stopped and resumed", "resumed with more epochs", "worker killed and restarted")
LAUNCHERS = ("single", "ddp", "horovod")
CELLS = [(launcher, scenario) for launcher in LAUNCHERS for scenario in SCENARIOS[1:]
         if scenario != "worker killed and restarted" or launcher == "ddp"]
# the same every time: what the data, the seed and the schedule decide
DETERMINISTIC = ("train_loss", "train_top1_err", "val_loss", "val_top1_err", "val_top5_err", "lr")


class Matrix:
    """Runs each (launcher, scenario) job once, on first use, in one workspace, one experiment per cell."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.data = str(write_cifar10(ws.root / "data", train_per_batch=40))  # 200 training images, 17 validation

    def launch(self, launcher: str, experiment: str, *flags: str, net: list[str] = FLAGS, timeout: float = 600):
        args = [*net, "--data-dir", self.data, *BATCH[launcher], *self.cell_flags(experiment), *flags]
        if launcher == "single":
            return self.ws.launch(*args, "--threads", "1", timeout=timeout)
        if launcher == "ddp":
            return self.ws.torchrun(2, *args, timeout=timeout)
        return self.ws.horovodrun(2, *args, timeout=timeout)

    def cell_flags(self, experiment: str) -> list[str]:
        """The cell's experiment, and its own checkpoint folder: one job's files never look like another's."""
        return ["--experiment", experiment, "--checkpoint-dir", str(self.ws.root / "ckpt" / experiment)]

    def checkpoints(self, experiment: str) -> str:
        (run,) = self.ws.runs(experiment)
        return str(self.ws.root / "ckpt" / experiment / run.info.run_id)

    @functools.cache
    def run(self, launcher: str, scenario: str):
        """The one run of the cell, after its job(s) ended."""
        experiment = f"{launcher}-{scenario}".replace(" ", "-")
        if scenario == "across launchers":
            check_ok(self.launch(launcher, experiment, net=ACROSS_LAUNCHERS))
        elif scenario == "uninterrupted":
            check_ok(self.launch(launcher, experiment, "--epochs", str(EPOCHS), *DECAY))
        elif scenario == "stopped and resumed":
            check_ok(self.launch(launcher, experiment, "--epochs", str(EPOCHS), *DECAY, "--stop-after", "1"))
            check_ok(self.launch(launcher, experiment, "--resume", self.checkpoints(experiment)))
        elif scenario == "resumed with more epochs":
            check_ok(self.launch(launcher, experiment, "--epochs", str(EPOCHS - 1), "--milestones", str(EPOCHS - 1)))
            check_ok(self.launch(launcher, experiment, "--resume", self.checkpoints(experiment),
                                 "--epochs", str(EPOCHS), *DECAY))
        else:
            self.kill_and_restart(experiment)
        (run,) = self.ws.runs(experiment)
        return run

    def kill_and_restart(self, experiment: str) -> None:
        """Rank 1 SIGKILLed as epoch 1's checkpoint appears; torchrun restarts both workers (once: a restart must
        join), which resume from that checkpoint."""
        args = [*FLAGS, "--data-dir", self.data, *BATCH["ddp"], "--epochs", str(EPOCHS), *DECAY]
        job = subprocess.Popen([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--max-restarts=1",
                                str(DDP), *self.ws.flags(), "--device", "cpu", "--threads", "1", *args,
                                *self.cell_flags(experiment)],
                               cwd=self.ws.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 600
            while not list((self.ws.root / "ckpt" / experiment).glob("*/epoch-0001.pt")):
                assert job.poll() is None and time.monotonic() < deadline, "no checkpoint of epoch 1"
                time.sleep(0.1)
            rank_process(job, 1).send_signal(signal.SIGKILL)
            output = job.communicate(timeout=600)[0]
        finally:
            kill_tree(job.pid)
        assert job.returncode == 0, output[-3000:]
        assert "restart 1 of torchrun job" in output and "resuming from" in output, output[-3000:]

    def weights(self, run) -> dict:
        (folder,) = self.ws.root.glob(f"ckpt/*/{run.info.run_id}")
        return load_checkpoint(find_checkpoint(str(folder)))["model"]

    def evaluate_checkpoint(self, run) -> dict:
        """The validation figures of ``run``'s final checkpoint, evaluated by one process."""
        cfg = make_config(arch="resnet-20", dataset="cifar10", data_dir=self.data, workers=0, batch_size=20)
        loaders = build_loaders(cfg.data, DistContext())
        model, _ = build_model(cfg, loaders.spec)
        model.load_state_dict(self.weights(run))
        return loop.evaluate(model, loaders.val, contextlib.nullcontext, SingleProcess(DistContext()), loaders.spec)

    def history(self, run, metric: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.ws.history(run.info.run_id, metric)]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> Matrix:
    return Matrix(Workspace(tmp_path_factory.mktemp("matrix")))


def cell_id(cell) -> str:
    return "-".join(cell).replace(" ", "_")


@pytest.mark.parametrize("launcher, scenario", CELLS, ids=map(cell_id, CELLS))
def test_final_weights_equal_the_uninterrupted_runs(matrix, launcher, scenario):
    ours, reference = matrix.weights(matrix.run(launcher, scenario)), matrix.weights(matrix.run(launcher,
                                                                                                "uninterrupted"))
    assert ours.keys() == reference.keys()
    differing = [k for k in reference if not torch.equal(ours[k], reference[k])]
    assert differing == [], f"{launcher}, {scenario}: weights differ from the uninterrupted run's"


@pytest.mark.parametrize("launcher, scenario", CELLS, ids=map(cell_id, CELLS))
def test_every_epoch_is_logged_once_with_the_uninterrupted_runs_values(matrix, launcher, scenario):
    run, reference = matrix.run(launcher, scenario), matrix.run(launcher, "uninterrupted")
    assert run.info.status == "FINISHED"
    for name in sorted(EPOCH_METRICS & set(reference.data.metrics)):
        assert [step for step, _ in matrix.history(run, name)] == list(range(1, EPOCHS + 1)), name
    for name in DETERMINISTIC:
        assert matrix.history(run, name) == matrix.history(reference, name), name


@pytest.mark.parametrize("launcher, scenario", [(launcher, "uninterrupted") for launcher in LAUNCHERS] + CELLS,
                         ids=map(cell_id, [(launcher, "uninterrupted") for launcher in LAUNCHERS] + CELLS))
def test_run_level_figures_cover_the_whole_run(matrix, launcher, scenario):
    run, reference = matrix.run(launcher, scenario), matrix.run(launcher, "uninterrupted")
    seconds = sum(v for name in ("epoch_time_s", "eval_time_s") for _, v in matrix.history(run, name))
    assert run.data.metrics["train_time_s"] == pytest.approx(seconds, rel=1e-9)
    for name in ("best_val_top1_err", "final_val_top1_err", "final_val_top5_err", "num_params", "flops_per_image"):
        assert run.data.metrics[name] == reference.data.metrics[name], name
    assert run.data.metrics["peak_mem_mib"] > 0


def test_a_resume_with_more_epochs_says_so_in_the_record(matrix):
    run = matrix.run("single", "resumed with more epochs")
    assert run.data.params["epochs"] == str(EPOCHS - 1)
    assert run.data.tags[f"cnnbench.resumed.epoch-{EPOCHS - 1}"] == (f"epochs: {EPOCHS - 1} -> {EPOCHS}; "
                                                                     f"milestones: ({EPOCHS - 1},) -> ({EPOCHS},)")


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_logged_validation_is_that_of_the_model_rank_0_checkpointed(matrix, launcher):
    run = matrix.run(launcher, "uninterrupted")
    ours = matrix.evaluate_checkpoint(run)
    assert run.data.metrics["val_top1_err"] == ours["val_top1_err"]
    assert run.data.metrics["val_top5_err"] == ours["val_top5_err"]
    assert run.data.metrics["val_loss"] == pytest.approx(ours["val_loss"], rel=1e-6)


@pytest.mark.parametrize("launcher", ["ddp", "horovod"])
def test_launchers_equal_one_process_on_a_net_without_batchnorm_or_dropout(matrix, launcher):
    single, ours = matrix.run("single", "across launchers"), matrix.run(launcher, "across launchers")
    assert ours.data.params["launcher"] == launcher and ours.data.params["world_size"] == "2"
    assert ours.info.run_name == f"alexnet cifar10 b10 fp32 {launcher}×2"
    assert ours.data.params["global_batch_size"] == single.data.params["global_batch_size"] == "20"
    reference = matrix.weights(single)
    for key, value in matrix.weights(ours).items():
        torch.testing.assert_close(value, reference[key], rtol=1e-5, atol=1e-6, msg=f"{launcher}: {key}")
    for name in ("val_top1_err", "val_top5_err"):
        assert matrix.history(ours, name) == matrix.history(single, name), name
    for name in ("val_loss", "train_loss"):
        ours_loss, single_loss = (dict(matrix.history(r, name)) for r in (ours, single))
        assert ours_loss == pytest.approx(single_loss, rel=1e-6), name


def test_horovod_checkpoints_the_momentum_of_the_optimizer_that_steps(matrix):
    matrix.run("horovod", "stopped and resumed")
    payload = load_checkpoint(find_checkpoint(matrix.checkpoints("horovod-stopped-and-resumed")))
    buffers = [s["momentum_buffer"] for s in payload["optimizer"]["state"].values()]
    assert len(buffers) == len([p for p in payload["model"] if "running" not in p and "num_batches" not in p])
    assert all(b is not None and b.abs().sum() > 0 for b in buffers)
