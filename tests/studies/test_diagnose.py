"""``cnnbench diagnose``: the verdict rule on recorded figures of both kinds, the causes it names with their measured
figures, and one real run of the command logged as one report run."""
from __future__ import annotations

import dataclasses

from tests.studies.test_suite import cnnbench
from train.studies.diagnose import Figures, Setting, bound_by, causes
from train.studies.report import REPORT_TAG
from train.studies.stats import Interval

# Recorded by the two cases of the notes of issue 22 on a 2-core machine shared with other work:
# shufflenet_v2_x0_5 on 2400x1800 JPEGs, --workers 0, batch 4 (input-bound) ...
INPUT_BOUND = Figures(loader=Interval(*LOADER_IN), step=Interval(*STEP_IN), run=Interval(*RUN_IN), parts=PARTS_IN)
JPEGS = Setting("cpu", "torch", "imagenet", 0, 2, 224, 4, False)
# ... and resnet-56 on synthetic 32x32, batch 16 (compute-bound)
COMPUTE_BOUND = Figures(loader=Interval(*LOADER_CB), step=Interval(*STEP_CB), run=Interval(*RUN_CB), parts=PARTS_CB)
SYNTHETIC = Setting("cpu", "torch", "synthetic", 2, 2, 32, 16, False)


def test_decoding_large_jpegs_in_the_training_process_is_input_bound():
    assert bound_by(INPUT_BOUND) == "input-bound"
    found = causes(INPUT_BOUND, JPEGS)
    assert any(c.startswith("--workers 0 decodes in the training process: ") and "try --workers 1 (2 cores here)" in c
               for c in found), found
    assert any("try --loader dali" in c for c in found), found


def test_a_deep_net_on_synthetic_batches_is_compute_bound():
    assert bound_by(COMPUTE_BOUND) == "compute-bound"
    (cause,) = causes(COMPUTE_BOUND, SYNTHETIC)
    assert cause.startswith(f"the real run reaches ") and "--channels-last" in cause


def test_a_run_only_slightly_below_the_step_is_compute_bound_even_when_significant():
    close = dataclasses.replace(COMPUTE_BOUND, step=Interval(100.0, 99.0, 101.0), run=Interval(95.0, 94.0, 96.0))
    assert bound_by(close) == "compute-bound"  # 5 % below, intervals apart: not material
    far = dataclasses.replace(close, run=Interval(80.0, 79.0, 81.0))
    assert bound_by(far) == "input-bound"  # data wait > exposed all-reduce (none)


def test_an_interval_overlapping_the_step_is_no_loss():
    wide = dataclasses.replace(COMPUTE_BOUND, step=Interval(100.0, 60.0, 140.0), run=Interval(70.0, 65.0, 75.0))
    assert bound_by(wide) == "compute-bound"


def test_an_all_reduce_larger_than_the_data_wait_is_communication_bound():
    parts = {**INPUT_BOUND.parts, "allreduce_exposed_ms": INPUT_BOUND.parts["data_wait_ms"] + 1}
    comm = dataclasses.replace(INPUT_BOUND, parts=parts)
    assert bound_by(comm) == "communication-bound"
    (cause,) = causes(comm, JPEGS)
    assert cause.startswith(f"all-reduce not hidden behind backward takes {parts['allreduce_exposed_ms']:.0f} ms")


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
