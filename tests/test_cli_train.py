"""``hessop train``: checkpoints, the training log and exact resumption."""

import json

import pytest
import torch
from cli_runs import run_cli

from hessop.checkpoints import load_checkpoint

# ResNet-8 on 200 digits for three epochs in float64, a checkpoint after
# every epoch: a few seconds on one CPU core.
TRAIN_RUN = [
    "train",
    "--model",
    "resnet8",
    "--train-samples",
    "200",
    "--epochs",
    "3",
    "--checkpoint-every",
    "1",
    "--lr",
    "0.05",
    "--lr-milestones",
    "2",
    "--dtype",
    "float64",
    "--quiet",
]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "full"
    status, stdout, stderr = run_cli([*TRAIN_RUN, "--out", out])
    assert status == 0, stderr
    return out, stdout


def read_training(out):
    return json.loads((out / "training.json").read_text())


def test_train_writes_checkpoints(full_run):
    out, stdout = full_run
    names = sorted(path.name for path in out.glob("checkpoint-epoch-*.pt"))
    assert names == [
        "checkpoint-epoch-0001.pt",
        "checkpoint-epoch-0002.pt",
        "checkpoint-epoch-0003.pt",
    ]
    assert "ResNet-8: 3 epochs" in stdout


def test_checkpoint_loads_weights_only(full_run):
    out, _ = full_run
    checkpoint = torch.load(
        out / "checkpoint-epoch-0002.pt", map_location="cpu", weights_only=True
    )
    assert checkpoint["epoch"] == 2
    assert set(checkpoint) >= {"model", "optimizer", "scheduler", "rng", "history"}
    assert checkpoint["rng"]["torch"].dtype == torch.uint8
    assert checkpoint["metadata"]["settings"]["lr_milestones"] == [2]
    assert checkpoint["metadata"]["model"] == "resnet8"
    assert checkpoint["scheduler"]["last_epoch"] == 2


def test_training_log_matches_checkpoint(full_run):
    out, _ = full_run
    record = read_training(out)
    final = load_checkpoint(out / "checkpoint-epoch-0003.pt")
    assert record["status"] == "complete"
    assert record["history"]["epoch"] == [1, 2, 3]
    assert record["history"]["lr"] == pytest.approx([0.05, 0.05, 0.005])
    assert record["history"]["test_accuracy"] == final["history"]["test_accuracy"]
    assert record["history"]["train_loss"] == final["history"]["train_loss"]
    assert len(record["history"]["test_loss"]) == 3
    assert [entry["epoch"] for entry in record["checkpoints"]] == [1, 2, 3]


def test_resume_gives_same_weights(full_run, tmp_path):
    out, _ = full_run
    resumed = tmp_path / "resumed"
    status, _, stderr = run_cli([*TRAIN_RUN, "--out", resumed])
    assert status == 0, stderr
    # An interruption after epoch 1: later checkpoints never got written.
    (resumed / "checkpoint-epoch-0002.pt").unlink()
    (resumed / "checkpoint-epoch-0003.pt").unlink()

    loud = [argument for argument in TRAIN_RUN if argument != "--quiet"]
    status, _, stderr = run_cli([*loud, "--out", resumed])
    assert status == 0, stderr
    assert "resuming from" in stderr
    assert "checkpoint-epoch-0001.pt (epoch 1)" in stderr
    reference = load_checkpoint(out / "checkpoint-epoch-0003.pt")
    again = load_checkpoint(resumed / "checkpoint-epoch-0003.pt")
    for name, tensor in reference["model"].items():
        assert torch.equal(tensor, again["model"][name]), name
    assert again["history"]["train_loss"] == reference["history"]["train_loss"]
    resumed_history = read_training(resumed)["history"]
    reference_history = read_training(out)["history"]
    for key in ("epoch", "lr", "train_loss", "test_loss", "test_accuracy"):
        assert resumed_history[key] == reference_history[key], key


def test_rerun_trains_nothing(full_run, monkeypatch):
    out, _ = full_run
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}

    def fail(*args, **kwargs):
        raise AssertionError("a finished training run was trained again")

    monkeypatch.setattr("hessop.cli._train.train", fail)
    status, stdout, stderr = run_cli([*TRAIN_RUN, "--out", out])
    assert status == 0, stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")} == before
    assert "3 epochs" in stdout


def test_changed_settings_rejected(full_run):
    out, _ = full_run
    arguments = [*TRAIN_RUN, "--out", out, "--weight-decay", "0.001"]
    status, _, stderr = run_cli(arguments)
    assert status == 1
    assert "cannot resume" in stderr
    assert "weight_decay" in stderr


def test_train_help_lists_checkpoint_option():
    status, stdout, _ = run_cli(["train", "--help"])
    assert status == 0
    assert "--checkpoint-every" in stdout
    assert "weights_only=True" in stdout
