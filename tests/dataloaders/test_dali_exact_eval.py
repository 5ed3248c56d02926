"""One fixed set of weights, evaluated by the engine on CIFAR-10's 17 validation images: --loader dali gives exactly
the validation error --loader torch gives, on one rank and on two (torchrun, gloo; 17 is odd, so the shards differ).

Run as a script under torchrun, this file is the two-rank half: it prints rank 0's results as JSON.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dataloaders import build_loaders
from train.context import DistContext
from train.engine import builders, loop
from train.engine.config import make_config
from train.engine.distributed import SingleProcess

LOADERS = ("torch", "dali")
TORCHRUN = Path(sys.executable).with_name("torchrun")


def evaluate_weights(loader: str, data_dir, weights, dist) -> dict:
    """The engine's evaluation of ``weights`` (a resnet-20 state dict file) through ``loader``, batches of 4."""
    cfg = make_config(arch="resnet-20", dataset="cifar10", data_dir=str(data_dir), loader=loader, val_batch_size=4,
                      workers=0)
    loaders = build_loaders(cfg.data, dist.ctx)
    model, _ = builders.build_model(cfg, loaders.spec)
    model.load_state_dict(torch.load(weights, weights_only=True))
    metrics = loop.evaluate(model, loaders.val, contextlib.nullcontext, dist, loaders.spec)
    return {name: value for name, value in metrics.items() if name != "eval_time_s"}


@pytest.fixture(scope="module")
def weights(cifar10_root, tmp_path_factory) -> Path:
    """resnet-20 after 12 SGD steps on the training images: right on some validation images, wrong on others."""
    cfg = make_config(arch="resnet-20", dataset="cifar10", data_dir=str(cifar10_root), batch_size=10, workers=0)
    loaders = build_loaders(cfg.data, DistContext())
    torch.manual_seed(0)
    model, _ = builders.build_model(cfg, loaders.spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    for epoch in range(4):
        loaders.train.set_epoch(epoch)
        for _, (images, labels) in zip(range(3), loaders.train):
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
    path = tmp_path_factory.mktemp("weights") / "resnet20.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def one_rank(cifar10_root, weights) -> dict:
    return {loader: evaluate_weights(loader, cifar10_root, weights, SingleProcess(DistContext()))
            for loader in LOADERS}


def test_one_rank_dali_error_is_torch_error(one_rank):
    torch_metrics, dali_metrics = one_rank["torch"], one_rank["dali"]
    assert 0 < torch_metrics["val_top1_err"] < 100  # the weights tell the images apart: the test has teeth
    assert dali_metrics["val_top1_err"] == torch_metrics["val_top1_err"]
    assert dali_metrics["val_top5_err"] == torch_metrics["val_top5_err"]
    # the same images to float rounding: (x - 255 mean) / (255 std) in DALI, (x / 255 - mean) / std in torch
    assert dali_metrics["val_loss"] == pytest.approx(torch_metrics["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_two_ranks_dali_error_is_torch_error(cifar10_root, weights, one_rank):
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", __file__, str(cifar10_root), str(weights)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two_ranks = json.loads(proc.stdout.strip().splitlines()[-1])
    for loader in LOADERS:
        assert two_ranks[loader]["val_top1_err"] == one_rank["torch"]["val_top1_err"], loader
        assert two_ranks[loader]["val_top5_err"] == one_rank["torch"]["val_top5_err"], loader
        assert two_ranks[loader]["val_loss"] == pytest.approx(one_rank["torch"]["val_loss"], rel=1e-5), loader


def main(data_dir: str, weights: str) -> None:
    from train.engine.distributed import torchrun_ddp

    dist = torchrun_ddp("gloo", "cpu", sync_bn=False)
    try:
        results = {loader: evaluate_weights(loader, data_dir, weights, dist) for loader in LOADERS}
    finally:
        torch.distributed.destroy_process_group()
    if dist.ctx.is_main:
        print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
