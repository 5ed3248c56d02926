"""``cnnbench diagnose``: the verdict rule on recorded figures of both kinds, the causes it names with their measured
figures, and one real run of the command logged as one report run."""
from __future__ import annotations

import dataclasses

import pytest

from tests.studies.test_suite import cnnbench
from train.studies.diagnose import Figures, Setting, bound_by, causes
from train.studies.report import REPORT_TAG
from train.studies.stats import Interval

# Recorded by the real cases of the notes of issue 22 (`cnnbench diagnose ... --repeats 3`) on a 2-core machine shared
# with six other sessions (load average 8 to 10), to 4 significant digits: resnet-56 on synthetic 32x32, batch 16 ...
COMPUTE_BOUND = Figures(loader=Interval(4888000.0, 3789000.0, 4992000.0), step=Interval(3.983, 1.474, 41.00),
                        run=Interval(9.599, 3.390, 34.91),
                        parts={"step_time_ms": 2436.0, "data_wait_ms": 0.2360, "forward_ms": 1094.0,
                               "backward_ms": 1270.0, "allreduce_exposed_ms": 0.0, "optimizer_ms": 70.67})
SYNTHETIC = Setting("cpu", "torch", "synthetic", 2, 2, 32, 16, False)
# ... and shufflenet_v2_x0_5 on 24 MP JPEGs, --workers 0, batch 2: on this loaded CPU the net at 224 px took longer
# than decoding (forward + backward 4.6 of the 7.1 s step, data wait 34 %), and (c)'s interval overlapped (b)'s
JPEGS_24MP = Figures(loader=Interval(0.7956, 0.6250, 0.8760), step=Interval(0.5512, 0.4049, 1.157),
                     run=Interval(0.3033, 0.2485, 0.5318),
                     parts={"step_time_ms": 7109.0, "data_wait_ms": 2405.0, "forward_ms": 2534.0,
                            "backward_ms": 2103.0, "allreduce_exposed_ms": 0.0, "optimizer_ms": 64.75})
JPEGS = Setting("cpu", "torch", "imagenet", 0, 2, 224, 2, False)
# ... and the same folder with a load average of 2.5 to 3.3, batch 4, --threads 1: the net at 224 px at 58 images/s on
# synthetic batches, decoding at 3.2: input-bound (docs/why-slow.md prints this report)
DECODE_DOMINATES = Figures(loader=Interval(3.196, 2.160, 5.430), step=Interval(58.00, 22.40, 118.0),
                           run=Interval(3.400, 2.590, 4.570),
                           parts={"step_time_ms": 1249.3, "data_wait_ms": 1168.2, "forward_ms": 37.8,
                                  "backward_ms": 39.1, "allreduce_exposed_ms": 0.0, "optimizer_ms": 3.4})
JPEGS_BATCH_4 = Setting("cpu", "torch", "imagenet", 0, 2, 224, 4, False)


def test_a_deep_net_on_synthetic_batches_is_compute_bound():
    assert bound_by(COMPUTE_BOUND) == "compute-bound"
    (cause,) = causes(COMPUTE_BOUND, SYNTHETIC)
    assert cause.startswith("the real run reaches ") and "--channels-last" in cause


def test_jpegs_a_slow_net_trains_on_are_compute_bound_and_the_data_wait_is_named():
    assert bound_by(JPEGS_24MP) == "compute-bound"
    main, data = causes(JPEGS_24MP, JPEGS)
    assert main.startswith("the real run reaches 0.303 images/s, 55 % of the 0.551")
    assert data == ("data wait is also 34 % of the step (2405 ms, --workers 0 on 2 cores; the loader alone delivers "
                    "0.796 images/s)")


def test_decoding_in_the_training_process_over_half_the_step_is_input_bound():
    assert bound_by(DECODE_DOMINATES) == "input-bound"
    found = causes(DECODE_DOMINATES, JPEGS_BATCH_4)
    assert found[0].startswith("the input pipeline alone delivers 3.20 images/s, the step takes 58.0")
    assert found[1] == ("--workers 0 decodes in the training process: 1168 ms of each 1249 ms step waits for data "
                        "(94 %); try --workers 1 (2 cores here)")
    assert any("try --loader dali" in c for c in found), found


def test_a_run_only_slightly_below_the_step_is_compute_bound_even_when_significant():
    close = dataclasses.replace(COMPUTE_BOUND, step=Interval(100.0, 99.0, 101.0), run=Interval(95.0, 94.0, 96.0))
    assert bound_by(close) == "compute-bound"  # 5 % below, intervals apart: not material
    far = dataclasses.replace(close, run=Interval(80.0, 79.0, 81.0))
    assert bound_by(far) == "input-bound"  # data wait > exposed all-reduce (none)


def test_an_interval_overlapping_the_step_is_no_loss():
    wide = dataclasses.replace(COMPUTE_BOUND, step=Interval(100.0, 60.0, 140.0), run=Interval(70.0, 65.0, 75.0))
    assert bound_by(wide) == "compute-bound"


def test_an_all_reduce_larger_than_the_data_wait_is_communication_bound():
    parts = {**DECODE_DOMINATES.parts, "allreduce_exposed_ms": DECODE_DOMINATES.parts["data_wait_ms"] + 1}
    comm = dataclasses.replace(DECODE_DOMINATES, parts=parts)
    assert bound_by(comm) == "communication-bound"
    (cause,) = causes(comm, JPEGS_BATCH_4)
    assert cause.startswith(f"all-reduce not hidden behind backward takes {parts['allreduce_exposed_ms']:.0f} ms")


@pytest.mark.slow
def test_the_command_measures_and_logs_one_report_run(ws, capsys):
    code, out, err = cnnbench(capsys, "diagnose", "--arch", "resnet-20", "--dataset", "synthetic", "--image-size", "8",
                              "--batch-size", "4", "--steps", "8", "--warmup-steps", "2", "--repeats", "2",
                              "--tracking-uri", ws.uri, "--experiment", "diag")
    assert code == 0, err
    assert "| (a) loader alone | " in out and "| (c) real training | " in out and "2 passes, 12 windows" in out
    (run,) = ws.runs("diag")
    assert run.data.tags[REPORT_TAG] == "diagnose"
    from mlflow import MlflowClient

    names = {a.path for a in MlflowClient(ws.uri).list_artifacts(run.info.run_id)}
    assert {"diagnose.md", "diagnose.json", "diagnose.png"} <= names
