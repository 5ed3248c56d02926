"""The MXNet engine (Gluon), run by ``mxnet_engine.MxnetEngine`` in ``.venv-mxnet`` as
``python -m train.studies.frameworks.mxnet_worker``: MXNet 1.9.1 needs numpy<1.24, which cannot share the main
environment. It imports neither torch nor TensorFlow.

Protocol: one JSON object per line each way. The parent sends ``{"op": NAME, ...arguments}``; the worker
answers ``{"ok": result}``, ``{"unsupported": reason}`` or ``{"error": "Type: message"}``. Its first line,
before any request, is ``{"ok": {"framework_version": ...}}`` or the error that kept MXNet from loading.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np

from train.studies.frameworks.contract import ModelInfo, TaskOptions, Unsupported
from train.studies.frameworks.tasks import FEATURES, TASKS, VGG_CNN, VGG_CNN_VARIANT, VggCnnSpec

LAYOUTS = {"channels_first": "NCHW", "channels_last": "NHWC"}
RESNET50_V1 = ("ResNet-50 v1 (stride 2 in the first 1x1 conv of each downsampling bottleneck; the bottlenecks' "
               "1x1 convs with bias, the others without), random init")


class GluonEngine:
    def __init__(self, mx):
        self.mx = mx
        self.ctx = mx.cpu()  # the PyPI mxnet wheel is CPU-only
        self.loss_sum = self.correct = self.seen = 0

    def build(self, options: dict, arrays: str) -> dict:
        mx, opts = self.mx, TaskOptions(**options)
        task = TASKS[opts.task]
        if opts.precision != "fp32":
            raise Unsupported(f"--precision {opts.precision}: the cnnbench MXNet engine trains in fp32 only")
        mx.random.seed(opts.seed)
        with np.load(arrays) as data:
            self.x_train, self.y_train = self._nd(data["x_train"], opts), mx.nd.array(data["y_train"], ctx=self.ctx)
            if "x_val" in data:
                self.x_val = self._nd(data["x_val"], opts)
        net, info = self._model(task, opts)
        net.initialize(mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3), ctx=self.ctx)
        net(self.x_train[:1])  # deferred initialisation: shapes are known after one forward pass
        net.hybridize(static_alloc=True, static_shape=True)
        self.net = net
        if task.training:
            self.loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()
            self.trainer = mx.gluon.Trainer(net.collect_params(), "sgd",
                                            {"learning_rate": opts.lr, "momentum": opts.momentum})
        params = sum(int(np.prod(p.shape)) for p in net.collect_params().values() if p.grad_req != "null")
        return dataclasses.asdict(ModelInfo(*info, "gluon hybridize(static_alloc, static_shape)", params))

    def _nd(self, x: np.ndarray, opts: TaskOptions):
        if opts.data_format == "channels_last":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return self.mx.nd.array(x, ctx=self.ctx)

    def _model(self, task, opts: TaskOptions):
        from mxnet.gluon.model_zoo import vision

        if task.arch == "vgg-cnn":
            if opts.data_format == "channels_last":
                self._probe_nhwc()
            return _vgg_cnn(self.mx.gluon.nn, VGG_CNN, task.num_classes, LAYOUTS[opts.data_format]), (
                "cnnbench vgg_cnn (gluon HybridSequential)", VGG_CNN_VARIANT)
        if opts.data_format != "channels_first":
            raise Unsupported("gluon model_zoo.vision.resnet50_v1 is built NCHW only (it takes no layout)")
        if task.training:
            return vision.resnet50_v1(classes=opts.num_classes), ("gluon model_zoo.vision.resnet50_v1", RESNET50_V1)
        return vision.resnet50_v1().features, ("gluon model_zoo.vision.resnet50_v1().features",
                                               f"{RESNET50_V1}; {FEATURES}")

    def _probe_nhwc(self) -> None:
        """MXNet's CPU convolutions (MKL-DNN) reject NHWC when they run, not when the net is built."""
        mx = self.mx
        conv = mx.gluon.nn.Conv2D(1, 3, padding=1, layout="NHWC", in_channels=1)
        conv.initialize(ctx=self.ctx)
        try:
            conv(mx.nd.ones((1, 4, 4, 1), ctx=self.ctx)).wait_to_read()
        except mx.base.MXNetError as err:
            raise Unsupported(f"its CPU convolution cannot take NHWC ({str(err).splitlines()[0]})") from None

    def train_step(self, indices: list[int]) -> None:
        mx = self.mx
        index = mx.nd.array(indices, ctx=self.ctx)
        images, labels = self.x_train.take(index), self.y_train.take(index)
        with mx.autograd.record():
            logits = self.net(images)
            loss = self.loss(logits, labels)
        loss.backward()
        self.trainer.step(len(indices))
        mx.nd.waitall()  # the update too, not only the loss, has ended when the step returns
        self.loss_sum += float(loss.sum().asscalar())
        self.correct += int((logits.argmax(axis=1) == labels).sum().asscalar())
        self.seen += len(indices)

    def end_train_epoch(self) -> list[float]:
        result = [self.loss_sum / self.seen, self.correct / self.seen]
        self.loss_sum = self.correct = self.seen = 0
        return result

    def predict_val(self, indices: list[int]) -> list[list[float]]:
        return self.net(self.x_val.take(self.mx.nd.array(indices, ctx=self.ctx))).asnumpy().tolist()

    def infer_step(self, indices: list[int]) -> None:
        self.net(self.x_train.take(self.mx.nd.array(indices, ctx=self.ctx)))
        self.mx.nd.waitall()


def _vgg_cnn(nn, spec: VggCnnSpec, num_classes: int, layout: str):
    net = nn.HybridSequential()
    for widths in spec.blocks:
        for width in widths:
            net.add(nn.Conv2D(width, 3, padding=1, activation="relu", layout=layout))
        net.add(nn.MaxPool2D(2, layout=layout), nn.Dropout(spec.block_dropout))
    net.add(nn.Dense(spec.dense, activation="relu"), nn.Dropout(spec.dense_dropout), nn.Dense(num_classes))
    return net


OPS = ("build", "train_step", "end_train_epoch", "predict_val", "infer_step")


def serve(engine: GluonEngine, requests, reply) -> None:
    for line in requests:
        request = json.loads(line)
        op = request.pop("op")
        if op == "exit":
            return
        try:
            if op not in OPS:
                raise ValueError(f"unknown op {op!r}")
            reply({"ok": getattr(engine, op)(**request)})
        except Unsupported as why:
            reply({"unsupported": str(why)})
        except Exception as err:  # reported to the parent, which raises it there with the worker's stderr above
            reply({"error": f"{type(err).__name__}: {err}"})


def main() -> None:
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever MXNet prints goes to stderr, never into the protocol

    def reply(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    try:
        import mxnet as mx
    except Exception as err:  # a broken install can fail with OSError (libraries) as well as ImportError
        reply({"error": f"cannot import mxnet: {type(err).__name__}: {err}"})
        return
    reply({"ok": {"framework_version": f"mxnet {mx.__version__}"}})
    serve(GluonEngine(mx), sys.stdin, reply)


if __name__ == "__main__":
    main()
