"""``cnnbench evaluate``: weights from the local cache or a file, each net's own preprocessing, Acc@1/Acc@5 equal
to a computation written here with torchvision/timm/PIL alone, the ranking table, and one-line refusals."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from PIL import Image
from timm.data import create_transform, resolve_data_config

from tests.fakedata import write_imagefolder
from train import cli
from train.engine.tracking import MlflowTracker
from train.errors import UsageError
from train.studies import evaluate
from train.studies.pretrained import imagenet_entry, load_file, load_published
from train.studies.reports import imagenet as ranking

# ImageNet-1k synsets and their output indices, written out here rather than read from the code under test
SYNSETS = {"n01440764": 0, "n01443537": 1, "n01484850": 2, "n01491361": 3, "n01496331": 5, "n01514668": 7,
           "n01514859": 8, "n15075141": 999}


def cached_file(torch_home: Path, name: str) -> Path:
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[1]


def squeezenet_favouring(classes) -> torch.nn.Module:
    """Random squeezenet1_1 whose head leans to ``classes``, so Acc@1 and Acc@5 land between 0 and 100 %."""
    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_1()
    with torch.no_grad():
        model.classifier[1].bias.fill_(-1.0)
        model.classifier[1].bias[list(classes)] = 1.0
    return model


@torch.no_grad()
def accuracy_by_hand(model, transform, val_dir: Path, label_of) -> tuple[float, float]:
    model.eval()
    top1 = top5 = n = 0
    for folder in sorted(val_dir.iterdir()):
        for image in sorted(folder.iterdir()):
            logits = model(transform(Image.open(image).convert("RGB"))[None])
            best = logits.topk(min(5, logits.shape[1])).indices[0].tolist()
            top1 += best[0] == label_of(folder.name)
            top5 += label_of(folder.name) in best
            n += 1
    return 100 * top1 / n, 100 * top5 / n


def evaluate_args(ws, data: Path, *args: str) -> list[str]:
    # one thread: two threads on a shared 2-core machine can make each pass 100 times slower
    return ["--data-dir", str(data), "--tracking-uri", ws.uri, "--workers", "0", "--out", str(ws.root / "out"),
            "--device", "cpu", "--threads", "1", *args]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """--threads sets torch's thread count for the whole test process: put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_pretrained_weights_from_the_torch_hub_cache(ws, tmp_path, monkeypatch):
    data = write_imagefolder(tmp_path / "data", classes=tuple(SYNSETS), train_per_class=0, val_per_class=2)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = squeezenet_favouring(SYNSETS.values())
    weights = cached_file(tmp_path / "torch", "squeezenet1_1")
    weights.parent.mkdir(parents=True)
    torch.save(model.state_dict(), weights)

    assert evaluate.main(evaluate_args(ws, data, "--arch", "SqueezeNet1_1", "--pretrained", "--batch-size", "5")) == 0

    [run] = ws.runs("imagenet")
    transform = torchvision.models.SqueezeNet1_1_Weights.DEFAULT.transforms()
    acc1, acc5 = accuracy_by_hand(model, transform, data / "val", SYNSETS.get)
    assert 0 < acc1 < acc5 < 100  # the weights make a test that a wrong label or transform would fail
    m = run.data.metrics
    assert m["eval_top1_acc"] == pytest.approx(acc1, abs=1e-9)
    assert m["eval_top5_acc"] == pytest.approx(acc5, abs=1e-9)
    assert m["eval_top1_err"] == pytest.approx(100 - acc1, abs=1e-9)
    assert m["eval_top5_err"] == pytest.approx(100 - acc5, abs=1e-9)
    p = run.data.params
    assert str(weights) in p["weights"] and p["arch_resolved"] == "torchvision/squeezenet1_1"
    assert p["val_size"] == "16" and p["image_size"] == "224" and "crop_size=[224]" in p["preprocessing"]
    assert run.info.status == "FINISHED"
    assert (ws.root / "out" / "imagenet.md").is_file()


def test_weights_file_for_a_timm_net_and_a_folder_of_own_classes(ws, tmp_path):
    classes = ("ant", "bee", "cat", "dog", "eel", "fox", "gnu")
    data = write_imagefolder(tmp_path / "data", classes=classes, train_per_class=0, val_per_class=2)
    torch.manual_seed(1)
    model = timm.create_model("test_resnet", num_classes=len(classes))
    path = tmp_path / "test_resnet.pt"
    torch.save(model.state_dict(), path)

    assert evaluate.main(evaluate_args(ws, data, "--arch", "test_resnet", "--weights", str(path))) == 0

    [run] = ws.runs("imagenet")
    transform = create_transform(**resolve_data_config({}, model=model))  # timm's own: 160 px, crop_pct 0.95
    acc1, acc5 = accuracy_by_hand(model, transform, data / "val", classes.index)
    assert 0 < acc5 < 100
    assert run.data.metrics["eval_top1_acc"] == pytest.approx(acc1, abs=1e-9)
    assert run.data.metrics["eval_top5_acc"] == pytest.approx(acc5, abs=1e-9)
    assert run.data.params["image_size"] == "160" and run.data.params["num_classes"] == "7"


def test_offline_without_cached_weights_is_one_line_naming_the_file(ws, tmp_path, monkeypatch, capsys):
    data = write_imagefolder(tmp_path / "data", classes=tuple(SYNSETS)[:2], train_per_class=0, val_per_class=1)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["evaluate", "--arch", "squeezenet1_1", "--pretrained", *evaluate_args(ws, data)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnbench: error: --pretrained torchvision/squeezenet1_1: no cached weights")
    assert str(cached_file(tmp_path / "torch", "squeezenet1_1")) in err
    assert len(err.strip().splitlines()) == 1
    assert ws.runs("imagenet") == []


def test_timm_net_without_cached_weights_names_the_hugging_face_file(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    entry = imagenet_entry("DualPathNet68")
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / "hf" / "models--timm--dpn68.mx_in1k"))):
        load_published(entry, download=False)


def test_timm_weights_from_the_hugging_face_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    repo = tmp_path / "hf" / "models--timm--test_resnet.r160_in1k"  # the cache's layout: refs/main -> snapshot
    (repo / "snapshots" / "0123abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    torch.manual_seed(2)
    saved = timm.create_model("test_resnet").state_dict()
    save_file(saved, repo / "snapshots" / "0123abc" / "model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))

    net = load_published(imagenet_entry("test_resnet"), download=False)

    loaded = net.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    assert str(repo / "snapshots" / "0123abc" / "model.safetensors") in net.weights
    assert net.preprocessing.image_size == 160 and net.preprocessing.mean == (0.5, 0.5, 0.5)


class TouchOnUnpickle:
    """What a malicious pickle does: runs code (here: creates a file) when loaded without weights_only."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_torchvision_cache_is_read_weights_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = cached_file(tmp_path / "torch", "squeezenet1_1")
    weights.parent.mkdir(parents=True)
    torch.save({"payload": TouchOnUnpickle(tmp_path / "code-ran")}, weights)
    with pytest.raises(UsageError, match="cannot load .*Weights only load failed"):
        load_published(imagenet_entry("squeezenet1_1"), download=False)
    assert not (tmp_path / "code-ran").exists()


def test_timm_cache_is_read_weights_only(tmp_path, monkeypatch):
    """timm before 1.0.26, which setup.cfg allows, loads a cached pytorch_model.bin with weights_only=False."""
    from huggingface_hub import constants

    repo = tmp_path / "hf" / "models--timm--test_resnet.r160_in1k"
    (repo / "snapshots" / "0123abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    weights = repo / "snapshots" / "0123abc" / "pytorch_model.bin"
    torch.save({"payload": TouchOnUnpickle(tmp_path / "code-ran")}, weights)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(UsageError, match=f"cannot load {re.escape(str(weights))}"):
        load_published(imagenet_entry("test_resnet"), download=False)
    assert not (tmp_path / "code-ran").exists()


def test_weights_of_another_net_are_refused_in_one_line(tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(UsageError, match="does not fit torchvision/squeezenet1_1 with 1000 classes"):
        load_file(imagenet_entry("squeezenet1_1"), str(path), 1000)


def test_folder_the_published_weights_cannot_score_is_refused_before_loading(ws, tmp_path):
    data = write_imagefolder(tmp_path / "data", train_per_class=0, val_per_class=1)  # cat, dog, fish
    with pytest.raises(UsageError, match="3 class folders, not named by ImageNet-1k synsets.*1000 outputs"):
        evaluate.main(evaluate_args(ws, data, "--arch", "resnet18", "--pretrained"))


def test_ranks_share_the_better_rank_on_ties():
    assert ranking.ranks([70.0, 80.0, 80.0, 60.0]) == [3, 1, 1, 4]


def test_ranking_table_from_the_runs(ws, tmp_path):
    # (arch, net, Acc@1, Acc@5): resnet50 is in the reference ranking, so its published figures appear beside it
    measured = [("resnet50", "torchvision/resnet50", 75.0, 92.0), ("vgg16", "torchvision/vgg16", 71.0, 93.0),
                ("dpn68", "timm/dpn68", 76.0, 91.0)]
    for arch, net, acc1, acc5 in measured:
        tracker = MlflowTracker(ws.uri, "imagenet")
        params = {"arch": arch, "arch_resolved": net, "weights": "file w.pt", "val_size": 50}
        with tracker.run(arch, params, {}):
            tracker.log_metrics({"eval_top1_acc": acc1, "eval_top5_acc": acc5, "eval_top1_err": 100 - acc1,
                                 "eval_top5_err": 100 - acc5}, step=0)
    text = ranking.render(ws.runs("imagenet"), tmp_path / "out").read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "rank" not in line]
    assert [(r[0].strip("| "), r[1], r[2]) for r in rows] == [("1", "3", "dpn68"), ("2", "2", "resnet50"),
                                                              ("3", "1", "vgg16")]
    assert "75.06 / 92.48 (pytorch resnet50)" in text
    assert rows[1][-1].startswith("reproduced [")  # 75.0 % of 50 images holds 75.06 %


@pytest.mark.parametrize("measured, verdict", [(80.0, "better"), (70.0, "worse"), (75.5, "reproduced")])
def test_reproduction_verdict_on_both_sides_of_a_published_accuracy(measured, verdict):
    """resnet50's published Acc@1 is 75.06 %; over 1,000 images 95 % of samples land within about ±2.7 points."""
    from scipy.stats import binomtest

    exact = binomtest(round(measured * 10), 1000).proportion_ci(0.95, method="exact")
    assert ranking.reproduction(measured, 1000, 75.06) == f"{verdict} [{100 * exact.low:.2f}–{100 * exact.high:.2f}]"
