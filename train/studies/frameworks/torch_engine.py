"""The PyTorch engine: the training engine's own pieces (registry, ``Step``, autocast dtypes, synchronise)
driven by the framework runner."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from train.engine.builders import AMP_DTYPES, Step
from train.engine.distributed import pick_device
from train.engine.measure import synchronize
from train.models import count_parameters, create_model, resolve_model
from train.studies.frameworks.contract import Arrays, ModelInfo, TaskOptions
from train.studies.frameworks.tasks import FEATURES, TASKS, VGG_CNN, VGG_CNN_VARIANT, VggCnnSpec

RESNET50_V1_5 = ("ResNet-50 v1.5 (stride 2 in the 3x3 conv of each downsampling bottleneck; convs without bias), "
                 "random init")


def vgg_cnn(spec: VggCnnSpec, num_classes: int) -> nn.Sequential:
    layers, channels = [], 3
    for widths in spec.blocks:
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
        layers += [nn.MaxPool2d(2), nn.Dropout(spec.block_dropout)]
    side = 32 // 2 ** len(spec.blocks)
    layers += [nn.Flatten(), nn.Linear(channels * side * side, spec.dense), nn.ReLU(), nn.Dropout(spec.dense_dropout),
               nn.Linear(spec.dense, num_classes)]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


class TorchEngine:
    def __init__(self, threads: int | None):
        if threads is not None:
            torch.set_num_threads(threads)
        self.threads = str(torch.get_num_threads())
        self.framework_version = f"torch {torch.__version__}"
        self.device = pick_device("auto").type
        self.loss_sum = self.correct = self.seen = 0

    def build(self, opts: TaskOptions, data: Arrays) -> ModelInfo:
        torch.manual_seed(opts.seed)
        self.memory_format = torch.channels_last if opts.data_format == "channels_last" else torch.contiguous_format
        model, info = self._model(opts)
        model.to(self.device, memory_format=self.memory_format)
        self.model = model
        self.x_train, self.y_train = self._images(data.x_train), torch.from_numpy(data.y_train).to(self.device)
        if data.x_val is not None:
            self.x_val = self._images(data.x_val)
        dtype = AMP_DTYPES[opts.precision]
        self.autocast = (contextlib.nullcontext if dtype is None
                         else lambda: torch.autocast(self.device, dtype=dtype))
        if TASKS[opts.task].training:
            optimizer = torch.optim.SGD(model.parameters(), lr=opts.lr, momentum=opts.momentum)
            scaler = torch.amp.GradScaler(self.device, enabled=opts.precision == "fp16")
            self.step = Step(model, optimizer, scaler, self.autocast)
        return info

    def _model(self, opts: TaskOptions) -> tuple[nn.Module, ModelInfo]:
        task = TASKS[opts.task]
        if task.arch == "vgg-cnn":
            model = vgg_cnn(VGG_CNN, task.num_classes)
            return model, ModelInfo("cnnbench vgg_cnn (nn.Sequential)", VGG_CNN_VARIANT, "none (eager)",
                                    count_parameters(model))
        model = create_model(task.arch, opts.num_classes, prefer="imagenet")
        resolved = resolve_model(task.arch, "imagenet").qualified_name
        if task.training:
            return model, ModelInfo(resolved, RESNET50_V1_5, "none (eager)", count_parameters(model))
        model.fc = nn.Identity()  # feature extraction: the 2048-d pooled features
        return model, ModelInfo(f"{resolved} (fc = Identity)", f"{RESNET50_V1_5}; {FEATURES}",
                                "none (eager)", count_parameters(model))

    def _images(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(self.device).contiguous(memory_format=self.memory_format)

    def train_step(self, indices: np.ndarray) -> None:
        self.model.train()
        index = torch.from_numpy(indices).to(self.device)
        labels = self.y_train[index]
        loss, logits = self.step(self.x_train[index].contiguous(memory_format=self.memory_format), labels)
        self.loss_sum += loss.item() * len(labels)  # .item() also ends the step on the device
        self.correct += (logits.argmax(1) == labels).sum().item()
        self.seen += len(labels)

    def end_train_epoch(self) -> tuple[float, float]:
        result = self.loss_sum / self.seen, self.correct / self.seen
        self.loss_sum = self.correct = self.seen = 0
        return result

    @torch.no_grad()
    def predict_val(self, indices: np.ndarray) -> np.ndarray:
        return self._forward(self.x_val, indices).float().cpu().numpy()

    @torch.no_grad()
    def infer_step(self, indices: np.ndarray) -> None:
        self._forward(self.x_train, indices)
        synchronize(torch.device(self.device))

    def _forward(self, images: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
        self.model.eval()
        batch = images[torch.from_numpy(indices).to(self.device)].contiguous(memory_format=self.memory_format)
        with self.autocast():
            return self.model(batch)

    def close(self) -> None:
        pass
