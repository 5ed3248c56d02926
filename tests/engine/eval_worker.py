"""Run under torchrun: evaluate one fixed set of weights on fake CIFAR and print the metrics as JSON (rank 0).

    torchrun --standalone --nproc_per_node=N tests/engine/eval_worker.py DATA_DIR VAL_BATCH
"""
import contextlib
import json
import sys

import torch

from dataloaders import DataConfig, build_loaders
from train.engine.distributed import torchrun_ddp
from train.engine.loop import evaluate
from train.models import create_model


def main(data_dir: str, val_batch: int) -> None:
    dist = torchrun_ddp("gloo", "cpu", sync_bn=False)
    loaders = build_loaders(DataConfig(dataset="cifar10", data_dir=data_dir, batch_size=val_batch, workers=0),
                            dist.ctx)
    torch.manual_seed(0)  # the same weights in every process and every job
    model = create_model("resnet-20", loaders.spec.num_classes)
    metrics = evaluate(model, loaders.val, contextlib.nullcontext, dist, loaders.spec)
    if dist.ctx.is_main:
        print(json.dumps({"local_images": loaders.val.num_samples, **metrics}))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
