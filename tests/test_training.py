"""Training loop, evaluation and checkpoints on small models and digits."""

import copy
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from hessop.checkpoints import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    save_checkpoint,
)
from hessop.datasets import load_dataset
from hessop.models import build_model
from hessop.training import TrainingHistory, TrainingSettings, evaluate, train


@pytest.fixture(scope="module")
def digits():
    train_set, _ = load_dataset("digits", num_samples=200, seed=0)
    test_set, _ = load_dataset("digits", split="test", num_samples=100, seed=0)
    return train_set, test_set


def resnet8(seed=0):
    return build_model("resnet8", num_classes=10, in_channels=1, seed=seed)


class DropoutNet(nn.Module):
    """A small network whose output depends on the global random state."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 32),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(32, 10),
        )

    def forward(self, x):
        return self.layers(x)


def dropout_net(seed=0):
    torch.manual_seed(seed)
    return DropoutNet()


def assert_same_state(first, second):
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for name, value in first_state.items():
        assert torch.equal(value, second_state[name]), name


def without_times(history):
    values = history.to_dict()
    values.pop("seconds")
    return values


# Reproducibility


def test_train_bitwise_reproducible(digits):
    train_set, test_set = digits
    options = dict(epochs=2, batch_size=32, lr=0.05, seed=3, test_dataset=test_set)
    first, second = resnet8(), resnet8()
    first_history = train(first, train_set, **options)
    second_history = train(second, train_set, **options)
    assert_same_state(first, second)
    assert without_times(first_history) == without_times(second_history)


def test_train_seed_changes_data_order(digits):
    train_set, _ = digits
    first, second = resnet8(), resnet8()
    train(first, train_set, epochs=1, batch_size=32, lr=0.05, seed=0)
    train(second, train_set, epochs=1, batch_size=32, lr=0.05, seed=1)
    assert not torch.equal(first.stem.conv.weight, second.stem.conv.weight)


def test_train_keeps_global_random_state(digits):
    train_set, _ = digits
    model = dropout_net()
    torch.manual_seed(42)
    before = torch.get_rng_state()
    train(model, train_set, epochs=1, batch_size=50, lr=0.05)
    assert torch.equal(torch.get_rng_state(), before)


def test_train_dropout_reproducible(digits):
    train_set, _ = digits
    first, second = dropout_net(), dropout_net()
    torch.manual_seed(1)
    train(first, train_set, epochs=2, batch_size=32, lr=0.05)
    torch.manual_seed(2)
    train(second, train_set, epochs=2, batch_size=32, lr=0.05)
    assert_same_state(first, second)


# Optimisation


def test_train_matches_plain_sgd():
    # With one batch per epoch the data order does not matter, so the result
    # must match torch.optim.SGD applied to the whole set.
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(16, 1, 2, 2, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (16,), generator=generator)
    dataset = TensorDataset(inputs, labels)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    reference = copy.deepcopy(model)

    train(
        model,
        dataset,
        epochs=4,
        batch_size=16,
        lr=0.3,
        momentum=0.8,
        weight_decay=0.01,
        lr_milestones=(2,),
        lr_gamma=0.5,
    )

    optimizer = torch.optim.SGD(
        reference.parameters(), lr=0.3, momentum=0.8, weight_decay=0.01
    )
    for epoch in range(4):
        for group in optimizer.param_groups:
            group["lr"] = 0.3 if epoch < 2 else 0.15
        optimizer.zero_grad()
        nn.functional.cross_entropy(reference(inputs), labels).backward()
        optimizer.step()
    for trained, expected in zip(
        model.parameters(), reference.parameters(), strict=True
    ):
        torch.testing.assert_close(trained, expected, rtol=1e-12, atol=1e-12)


def test_train_learns_digits(digits):
    train_set, test_set = digits
    model = build_model("cnn", num_classes=10, in_channels=1, seed=0)
    history = train(
        model, train_set, epochs=8, batch_size=20, lr=0.05, test_dataset=test_set
    )
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.test_accuracy[-1] > 0.7


def test_lr_schedule_in_history(digits):
    train_set, _ = digits
    history = train(
        resnet8(),
        train_set,
        epochs=4,
        batch_size=100,
        lr=0.1,
        lr_milestones=(1, 3),
        lr_gamma=0.5,
    )
    assert history.lr == pytest.approx([0.1, 0.05, 0.05, 0.025])


def test_history_fields(digits):
    train_set, test_set = digits
    history = train(
        resnet8(), train_set, epochs=2, batch_size=64, lr=0.05, test_dataset=test_set
    )
    assert history.epoch == [1, 2]
    for name in (
        "lr",
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "seconds",
    ):
        assert len(getattr(history, name)) == 2, name
    assert all(
        0 <= value <= 1 for value in history.train_accuracy + history.test_accuracy
    )
    assert all(value > 0 for value in history.seconds)

    no_test = train(resnet8(), train_set, epochs=1, batch_size=64, lr=0.05)
    assert no_test.test_loss == []
    assert no_test.test_accuracy == []
    assert TrainingHistory.from_dict(history.to_dict()) == history


def test_history_test_entry_matches_evaluate(digits):
    train_set, test_set = digits
    model = resnet8()
    history = train(
        model, train_set, epochs=1, batch_size=64, lr=0.05, test_dataset=test_set
    )
    result = evaluate(model, test_set, batch_size=64)
    assert history.test_loss[-1] == result.loss
    assert history.test_accuracy[-1] == result.accuracy


def test_train_restores_module_modes(digits):
    train_set, _ = digits
    model = resnet8()
    model.eval()
    train(model, train_set, epochs=1, batch_size=100, lr=0.05)
    assert not any(module.training for module in model.modules())

    model.train()
    model.stage2.eval()
    train(model, train_set, epochs=1, batch_size=100, lr=0.05)
    assert model.training
    assert not model.stage2.training
    assert model.stage1.training


def test_train_float64_model_on_float32_data(digits):
    train_set, test_set = digits
    model = resnet8().double()
    history = train(
        model, train_set, epochs=1, batch_size=64, lr=0.05, test_dataset=test_set
    )
    assert model.stem.conv.weight.dtype == torch.float64
    assert math.isfinite(history.test_loss[0])


def test_train_diverges_with_error():
    generator = torch.Generator().manual_seed(0)
    dataset = TensorDataset(
        torch.randn(32, 1, 2, 2, generator=generator) * 100,
        torch.randint(0, 3, (32,), generator=generator),
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(FloatingPointError, match="training diverged in epoch"):
        train(model, dataset, epochs=5, batch_size=8, lr=1e30, momentum=0.0)


def test_train_logs_each_epoch(digits, caplog):
    train_set, test_set = digits
    with caplog.at_level(logging.INFO, logger="hessop.training"):
        train(
            resnet8(),
            train_set,
            epochs=2,
            batch_size=100,
            lr=0.05,
            test_dataset=test_set,
        )
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("epoch 1/2: lr 0.05") for message in messages)
    assert any(
        message.startswith("epoch 2/2") and "test accuracy" in message
        for message in messages
    )


def test_train_with_progress_bar(digits, capsys):
    train_set, _ = digits
    history = train(
        resnet8(), train_set, epochs=1, batch_size=100, lr=0.05, progress=True
    )
    assert history.epoch == [1]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"epochs": -1}, "epochs must be at least 0"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"lr": float("nan")}, "lr must be positive"),
        ({"lr": "0.1"}, "lr must be a number"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"weight_decay": -1e-4}, "weight_decay must be non-negative"),
        ({"seed": -1}, "seed must be at least 0"),
        ({"lr_milestones": (3, 2)}, "strictly increasing"),
        ({"lr_milestones": (0,)}, "each lr milestone must be at least 1"),
        ({"lr_gamma": 0.0}, "lr_gamma must be positive"),
        ({"checkpoint_every": 1}, "needs an on_checkpoint callback"),
    ],
)
def test_train_invalid_arguments(digits, arguments, message):
    train_set, _ = digits
    options = {"epochs": 1, "batch_size": 10, "lr": 0.1, **arguments}
    with pytest.raises(ValueError, match=message):
        train(resnet8(), train_set, **options)


def test_train_empty_dataset():
    dataset = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="dataset is empty"):
        train(resnet8(), dataset, epochs=1, batch_size=10, lr=0.1)


def test_training_settings_to_dict():
    settings = TrainingSettings(
        epochs=3, batch_size=8, lr=0.1, seed=np.int64(4), lr_milestones=[1, np.int64(2)]
    )
    assert type(settings.seed) is int
    assert all(type(milestone) is int for milestone in settings.lr_milestones)
    assert settings.lr_milestones == (1, 2)
    assert settings.to_dict()["lr_milestones"] == [1, 2]
    assert settings.to_dict()["weight_decay"] == 1e-4


# Evaluation


class PairDataset(Dataset):
    """A map-style dataset that is not a TensorDataset."""

    def __init__(self, inputs, labels):
        self.inputs, self.labels = inputs, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.inputs[index], self.labels[index]


def test_evaluate_matches_direct_computation(digits):
    _, test_set = digits
    model = resnet8().eval()
    inputs, labels = test_set.tensors
    with torch.no_grad():
        logits = model(inputs)
    expected_loss = nn.functional.cross_entropy(logits, labels).item()
    expected_accuracy = (logits.argmax(1) == labels).double().mean().item()

    result = evaluate(model, test_set, batch_size=7)
    assert result.num_samples == 100
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)
    assert result.accuracy == pytest.approx(expected_accuracy)


def test_evaluate_batch_size_invariant(digits):
    _, test_set = digits
    model = resnet8()
    small = evaluate(model, test_set, batch_size=7)
    whole = evaluate(model, test_set, batch_size=1000)
    assert small.loss == pytest.approx(whole.loss, rel=1e-5)
    assert small.accuracy == whole.accuracy


def test_evaluate_generic_dataset(digits):
    _, test_set = digits
    model = resnet8()
    generic = PairDataset(*test_set.tensors)
    assert evaluate(model, generic, batch_size=30).loss == pytest.approx(
        evaluate(model, test_set, batch_size=30).loss, rel=1e-6
    )


def test_evaluate_restores_modes_and_state(digits):
    _, test_set = digits
    model = resnet8()
    model.stage3.eval()
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    modes = {name: module.training for name, module in model.named_modules()}

    evaluate(model, test_set)

    assert modes == {name: module.training for name, module in model.named_modules()}
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name
    assert all(parameter.grad is None for parameter in model.parameters())


def test_evaluate_invalid_arguments(digits):
    _, test_set = digits
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        evaluate(resnet8(), test_set, batch_size=0)
    with pytest.raises(ValueError, match="map-style dataset"):
        evaluate(resnet8(), iter([]))


# Checkpoints


def test_resume_from_checkpoint_file_is_bitwise_equal(digits, tmp_path):
    train_set, test_set = digits
    # One learning-rate milestone before the checkpoint and one after it.
    options = dict(
        epochs=5,
        batch_size=32,
        lr=0.05,
        seed=5,
        lr_milestones=(1, 4),
        test_dataset=test_set,
    )
    straight = dropout_net()
    straight_history = train(straight, train_set, **options)

    path = tmp_path / "epoch_2.pt"

    def save_at_epoch_two(checkpoint):
        if checkpoint["epoch"] == 2:
            save_checkpoint(checkpoint, path)

    interrupted = dropout_net()
    train(
        interrupted,
        train_set,
        **{**options, "epochs": 2},
        checkpoint_every=1,
        on_checkpoint=save_at_epoch_two,
    )
    checkpoint = load_checkpoint(path)
    resumed = dropout_net(seed=99)
    resumed_history = train(resumed, train_set, **options, resume_from=checkpoint)

    assert_same_state(straight, resumed)
    assert without_times(resumed_history) == without_times(straight_history)


def test_checkpoint_schedule_and_contents(digits):
    train_set, _ = digits
    checkpoints = []
    model = resnet8()
    train(
        model,
        train_set,
        epochs=5,
        batch_size=100,
        lr=0.05,
        checkpoint_every=2,
        on_checkpoint=checkpoints.append,
    )

    assert [checkpoint["epoch"] for checkpoint in checkpoints] == [2, 4, 5]
    last = checkpoints[-1]
    assert last["format"] == CHECKPOINT_FORMAT
    assert set(last) >= {
        "settings",
        "model",
        "optimizer",
        "scheduler",
        "rng",
        "history",
    }
    assert last["history"]["epoch"] == [1, 2, 3, 4, 5]
    assert last["settings"]["epochs"] == 5
    # Each checkpoint is a copy: later training does not change it.
    assert not torch.equal(
        checkpoints[0]["model"]["stem.conv.weight"], model.stem.conv.weight
    )
    assert torch.equal(last["model"]["stem.conv.weight"], model.stem.conv.weight)


def test_checkpoint_loads_with_weights_only(digits, tmp_path):
    train_set, _ = digits
    checkpoints = []
    train(
        resnet8(),
        train_set,
        epochs=1,
        batch_size=100,
        lr=0.05,
        lr_milestones=(3,),
        checkpoint_every=1,
        on_checkpoint=checkpoints.append,
    )
    path = save_checkpoint(
        {**checkpoints[0], "metadata": {"model": "resnet8"}}, tmp_path / "a.pt"
    )
    loaded = torch.load(path, weights_only=True)
    assert loaded["metadata"] == {"model": "resnet8"}
    assert loaded["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]

    # Saving again replaces the file.
    save_checkpoint({**checkpoints[0], "epoch": 7}, path)
    assert load_checkpoint(path)["epoch"] == 7


def test_load_checkpoint_rejects_other_files(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a hessop training checkpoint"):
        load_checkpoint(path)
    torch.save({"format": CHECKPOINT_FORMAT, "version": 99}, path)
    with pytest.raises(ValueError, match="version 99"):
        load_checkpoint(path)


def test_resume_rejects_changed_settings(digits):
    train_set, _ = digits
    checkpoints = []
    options = dict(epochs=2, batch_size=100, lr=0.05)
    train(
        resnet8(),
        train_set,
        **options,
        checkpoint_every=2,
        on_checkpoint=checkpoints.append,
    )
    checkpoint = checkpoints[-1]

    with pytest.raises(
        ValueError, match=r"trained with lr=0\.05, but this run has lr=0\.1"
    ):
        train(resnet8(), train_set, **{**options, "lr": 0.1}, resume_from=checkpoint)
    with pytest.raises(ValueError, match="already completed 2 epochs"):
        train(resnet8(), train_set, **{**options, "epochs": 1}, resume_from=checkpoint)
    with pytest.raises(ValueError, match="differ in having a test_dataset"):
        train(
            resnet8(),
            train_set,
            **options,
            test_dataset=train_set,
            resume_from=checkpoint,
        )
    with pytest.raises(ValueError, match="not a hessop training checkpoint"):
        train(resnet8(), train_set, **options, resume_from={"model": {}})


def test_resume_extends_training(digits):
    train_set, _ = digits
    checkpoints = []
    model = resnet8()
    train(
        model,
        train_set,
        epochs=2,
        batch_size=100,
        lr=0.05,
        checkpoint_every=2,
        on_checkpoint=checkpoints.append,
    )
    history = train(
        resnet8(seed=1),
        train_set,
        epochs=3,
        batch_size=100,
        lr=0.05,
        resume_from=checkpoints[-1],
    )
    assert history.epoch == [1, 2, 3]
