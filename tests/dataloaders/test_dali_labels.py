"""DALI's labels come out of the pipeline on the model's device, as its images do: on a GPU the pipeline copies them
there from its own pinned buffers, instead of the loop copying them from unpinned host memory at every step.

The pipelines' graphs are inspected before they are built (a graph for a GPU is defined without one here); that
they run on a GPU is the acceptance command's to show (benchmarks/gpu_acceptance.py)."""
from __future__ import annotations

import pytest
import torch

from dataloaders.contract import DataConfig
from train.context import DistContext

pytest.importorskip("nvidia.dali", reason="--loader dali needs NVIDIA DALI: pip install -e '.[dali]'")


class Spec:
    mean, std, image_size = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 8


def pipelines(device: str):
    from dataloaders import dali_folder, dali_memory

    ctx, cfg, settings = DistContext(device=torch.device(device)), DataConfig(), dict(batch_size=2, num_threads=1,
                                                                                      device_id=None)
    return {"memory": dali_memory.memory_pipeline(iter([]), Spec, True, cfg, ctx, **settings),
            "folder train": dali_folder.train_folder_pipeline(["a.jpg"], [0], Spec, cfg, ctx, **settings),
            "folder val": dali_folder.val_folder_pipeline(["a.jpg"], [0], Spec, cfg, ctx, **settings)}


def output_devices(pipeline) -> list[str]:
    pipeline._build_graph()  # DALI's graph of DataNodes, as build() makes it before it needs a device
    return [node.device for node in pipeline._graph_outputs]


@pytest.mark.parametrize("device, expected", [("cuda", ["gpu", "gpu"]), ("cpu", ["cpu", "cpu"])])
def test_images_and_labels_leave_the_pipeline_on_the_models_device(device, expected):
    assert {name: output_devices(p) for name, p in pipelines(device).items()} == {
        "memory": expected, "folder train": expected, "folder val": expected}
