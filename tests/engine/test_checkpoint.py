"""Atomic checkpoints: complete files only, the newest two kept, unreadable files refused in one line."""
import pytest
import torch

from train.engine.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from train.errors import UsageError


def payload(epoch):
    return {"config": {"arch": "resnet-20"}, "model": {"w": torch.full((3,), float(epoch))}, "epoch": epoch}


def test_save_keeps_the_newest_two_and_leaves_no_temp_files(tmp_path):
    for epoch in range(1, 5):
        save_checkpoint(tmp_path, epoch, payload(epoch))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0003.pt", "epoch-0004.pt"]
    newest = find_checkpoint(str(tmp_path))
    assert newest.name == "epoch-0004.pt"
    assert torch.equal(load_checkpoint(newest)["model"]["w"], torch.full((3,), 4.0))


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, payload(1))

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 2, payload(2))
    assert find_checkpoint(str(tmp_path)).name == "epoch-0001.pt"
    assert load_checkpoint(tmp_path / "epoch-0001.pt")["epoch"] == 1


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_unreadable_checkpoint_is_a_usage_error(tmp_path, content):
    bad = tmp_path / "epoch-0001.pt"
    bad.write_bytes(content)
    with pytest.raises(UsageError, match="not a readable cnnbench checkpoint") as refused:
        load_checkpoint(bad)
    assert len(str(refused.value).replace(str(bad), "")) < 150 and "weights_only" not in str(refused.value)


def test_missing_resume_path_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such checkpoint"):
        find_checkpoint(str(tmp_path / "nope.pt"))
    with pytest.raises(UsageError, match="no epoch"):
        find_checkpoint(str(tmp_path))


def test_arbitrary_pickles_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "model": Evil()}, path)
    with pytest.raises(UsageError):
        load_checkpoint(path)
