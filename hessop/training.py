"""Train a classifier with SGD and momentum.

:func:`train` runs mini-batch SGD with momentum, weight decay and a step
learning-rate schedule, as used for the CIFAR ResNets of He et al. (2016),
Section 4.2. A seed fixes the data order and every other random choice, so
two runs from the same initial weights with the same seed give bitwise equal
weights on the CPU. The training can save checkpoints and resume from them
to the same result as an uninterrupted run. :func:`evaluate` (from
:mod:`hessop.evaluation`) computes the loss and accuracy on a dataset.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from hessop.checkpoints import make_checkpoint, restore_states, validate_checkpoint
from hessop.evaluation import (
    Evaluation,
    batch_to_model,
    check_dataset,
    evaluate,
    iterate_batches,
    model_placement,
    preserved_modes,
)

__all__ = ["Evaluation", "TrainingHistory", "TrainingSettings", "evaluate", "train"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSettings:
    """Hyperparameters of a training run. See :func:`train` for each one.

    Raises
    ------
    ValueError
        On construction, if a value is out of range.
    """

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1

    def __post_init__(self) -> None:
        _check_int(self.epochs, "epochs", minimum=0)
        _check_int(self.batch_size, "batch_size", minimum=1)
        _check_int(self.seed, "seed", minimum=0)
        _check_number(self.lr, "lr", lambda x: x > 0, "positive")
        _check_number(self.momentum, "momentum", lambda x: 0 <= x < 1, "in [0, 1)")
        _check_number(
            self.weight_decay, "weight_decay", lambda x: x >= 0, "non-negative"
        )
        _check_number(self.lr_gamma, "lr_gamma", lambda x: x > 0, "positive")

        milestones = tuple(self.lr_milestones)
        for milestone in milestones:
            _check_int(milestone, "each lr milestone", minimum=1)
        if any(later <= earlier for earlier, later in itertools.pairwise(milestones)):
            raise ValueError(
                f"lr_milestones must be strictly increasing epochs, got {milestones}"
            )
        # Plain Python numbers keep checkpoints loadable with weights_only=True,
        # which rejects NumPy scalars.
        for name in ("epochs", "batch_size", "seed"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("lr", "momentum", "weight_decay", "lr_gamma"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "lr_milestones", tuple(int(m) for m in milestones))

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a dict of numbers and lists."""
        settings = dataclasses.asdict(self)
        settings["lr_milestones"] = list(self.lr_milestones)
        return settings


@dataclass
class TrainingHistory:
    """Per-epoch record of a training run.

    Each attribute is a list with one entry per completed epoch. The test
    lists are empty when :func:`train` had no test set.

    Attributes
    ----------
    epoch : list of int
        Epoch number, starting at 1.
    lr : list of float
        Learning rate used during the epoch.
    train_loss, train_accuracy : list of float
        Mean cross-entropy and accuracy over the epoch's mini-batches, in
        training mode and with the weights of the moment of each batch (the
        running average that training logs usually show).
    test_loss, test_accuracy : list of float
        Mean cross-entropy and accuracy on the test set after the epoch, in
        evaluation mode.
    seconds : list of float
        Wall time of the epoch, test evaluation included.
    """

    epoch: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        """Return a copy of the lists, keyed by attribute name."""
        return {key: list(values) for key, values in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Sequence[float]]) -> TrainingHistory:
        """Build a history from the output of :meth:`to_dict`."""
        names = [item.name for item in dataclasses.fields(cls)]
        return cls(**{name: list(values.get(name, ())) for name in names})


def train(
    model: nn.Module,
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    seed: int = 0,
    lr_milestones: Sequence[int] = (),
    lr_gamma: float = 0.1,
    test_dataset: Dataset | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume_from: Mapping[str, Any] | None = None,
) -> TrainingHistory:
    """Train a classifier in place with SGD, momentum and a step schedule.

    Each epoch visits the training samples once, in a random order drawn from
    ``seed`` and the epoch number, in mini-batches of ``batch_size`` (the
    last one may be smaller). Each mini-batch takes one step of
    :class:`torch.optim.SGD` on the mean cross-entropy loss. The learning rate
    starts at ``lr`` and is multiplied by ``lr_gamma`` after each epoch listed
    in ``lr_milestones`` (:class:`torch.optim.lr_scheduler.MultiStepLR`).

    Parameters
    ----------
    model : torch.nn.Module
        Classifier returning logits of shape ``(B, num_classes)``. It is
        trained in place and moved to ``device``.
    dataset : torch.utils.data.Dataset
        Map-style training set of ``(input, label)`` pairs.
        :class:`~torch.utils.data.TensorDataset` is indexed a whole batch at
        a time, and other datasets one sample at a time.
    epochs : int
        Total number of epochs, counting those done before ``resume_from``.
    batch_size : int
        Samples per mini-batch.
    lr : float
        Initial learning rate.
    momentum : float
        Momentum of SGD. The default 0.9 is that of He et al. (2016).
    weight_decay : float
        L2 penalty coefficient of SGD. The default 1e-4 is that of He et al.
        (2016) for the CIFAR ResNets.
    seed : int
        Seeds the data order and the global torch random state during
        training (for models with dropout or other random layers). The
        caller's global random state is restored afterwards.
    lr_milestones : sequence of int
        Strictly increasing epochs after which the learning rate drops.
    lr_gamma : float
        Factor applied to the learning rate at each milestone.
    test_dataset : torch.utils.data.Dataset, optional
        Evaluated with :func:`evaluate` after every epoch.
    device : str or torch.device, optional
        Device to train on. Defaults to the device of the model's parameters.
    progress : bool
        Show a ``tqdm`` progress bar over epochs. The bar is shown only when
        standard error is a terminal.
    checkpoint_every : int
        If positive, call ``on_checkpoint`` after every ``checkpoint_every``
        epochs and after the last epoch.
    on_checkpoint : callable, optional
        Receives a checkpoint dict, for example to pass it to
        :func:`hessop.checkpoints.save_checkpoint`. The dict contains copies
        of the states, so it stays valid while training goes on.
    resume_from : Mapping, optional
        A checkpoint from an earlier run with the same settings (``epochs``
        may differ). Training continues after its epoch, with its weights,
        optimiser state, learning-rate schedule, random state and history.

    Returns
    -------
    TrainingHistory
        One entry per epoch, including the epochs before ``resume_from``.

    Raises
    ------
    ValueError
        For invalid settings, an empty dataset, ``checkpoint_every`` without
        ``on_checkpoint``, or a checkpoint that does not match the settings.
    FloatingPointError
        If the mean training loss of an epoch is not finite (the training
        diverged). The model keeps the diverged weights.

    Notes
    -----
    The checkpoint dict has the entries ``format``, ``version``, ``epoch``
    (epochs completed), ``settings`` (:meth:`TrainingSettings.to_dict`),
    ``model``, ``optimizer`` and ``scheduler`` (their ``state_dict``),
    ``rng`` (the global torch random state, and the CUDA one when training on
    a GPU) and ``history`` (:meth:`TrainingHistory.to_dict`). The data order
    of an epoch is a function of ``seed`` and the epoch number alone, so no
    data-loader state is needed to resume.

    Bitwise reproducibility holds on the CPU with the same torch version and
    number of threads. On a GPU it also needs
    :func:`torch.use_deterministic_algorithms`, which this function does not
    set because it is process-wide.

    Examples
    --------
    >>> from hessop.datasets import load_dataset
    >>> from hessop.models import build_model
    >>> from hessop.training import train
    >>> data, info = load_dataset("digits", num_samples=200)
    >>> model = build_model("cnn", num_classes=10, in_channels=1, seed=0)
    >>> history = train(model, data, epochs=2, batch_size=32, lr=0.05)
    >>> len(history.train_loss)
    2
    """
    settings = TrainingSettings(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        seed=seed,
        lr_milestones=tuple(lr_milestones),
        lr_gamma=lr_gamma,
    )
    num_samples = check_dataset(dataset, "dataset")
    if test_dataset is not None:
        check_dataset(test_dataset, "test_dataset")
    _check_int(checkpoint_every, "checkpoint_every", minimum=0)
    if checkpoint_every > 0 and on_checkpoint is None:
        raise ValueError("checkpoint_every > 0 needs an on_checkpoint callback")

    device, dtype = model_placement(model, device)
    model.to(device)
    optimizer, scheduler = _make_optimizer(model, settings)
    history = TrainingHistory()

    # NOTE: no test covers the CUDA branches (seeding, and saving and
    # restoring the CUDA random state), because the tests run on the CPU.
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices), preserved_modes(model):
        if resume_from is None:
            _seed_global_rng(settings.seed, device)
            start_epoch = 0
        else:
            start_epoch = _restore(
                resume_from,
                settings,
                test_dataset is not None,
                model,
                optimizer,
                scheduler,
                history,
                device,
            )
        logger.info(
            "training %s on %d samples, epochs %d to %d (%s)",
            type(model).__name__,
            num_samples,
            start_epoch + 1,
            settings.epochs,
            _describe(settings),
        )

        epoch_bar = tqdm(
            total=settings.epochs,
            initial=start_epoch,
            desc="training",
            unit="epoch",
            disable=None if progress else True,
        )
        with epoch_bar:
            for epoch in range(start_epoch + 1, settings.epochs + 1):
                started = time.perf_counter()
                current_lr = optimizer.param_groups[0]["lr"]
                model.train()
                train_loss, train_accuracy = _train_epoch(
                    model, optimizer, dataset, settings, epoch, device, dtype
                )
                scheduler.step()
                if not math.isfinite(train_loss):
                    raise FloatingPointError(
                        f"training diverged in epoch {epoch}: the mean training "
                        f"loss is {train_loss}. Lower the learning rate "
                        f"(lr={current_lr:g})."
                    )

                history.epoch.append(epoch)
                history.lr.append(current_lr)
                history.train_loss.append(train_loss)
                history.train_accuracy.append(train_accuracy)
                if test_dataset is not None:
                    result = evaluate(
                        model, test_dataset, settings.batch_size, device=device
                    )
                    history.test_loss.append(result.loss)
                    history.test_accuracy.append(result.accuracy)
                history.seconds.append(time.perf_counter() - started)
                _log_epoch(history, settings.epochs)
                epoch_bar.set_postfix(
                    loss=f"{train_loss:.4f}", accuracy=f"{train_accuracy:.3f}"
                )
                epoch_bar.update()

                if checkpoint_every > 0 and (
                    epoch % checkpoint_every == 0 or epoch == settings.epochs
                ):
                    checkpoint = make_checkpoint(
                        epoch,
                        settings.to_dict(),
                        history.to_dict(),
                        model,
                        optimizer,
                        scheduler,
                        device,
                    )
                    on_checkpoint(checkpoint)

    return history


def _make_optimizer(
    model: nn.Module, settings: TrainingSettings
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR]:
    optimizer = torch.optim.SGD(
        [parameter for parameter in model.parameters() if parameter.requires_grad],
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(settings.lr_milestones), gamma=settings.lr_gamma
    )
    return optimizer, scheduler


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: Dataset,
    settings: TrainingSettings,
    epoch: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> tuple[float, float]:
    """Run one epoch of SGD and return its mean training loss and accuracy."""
    generator = _epoch_generator(settings.seed, epoch)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for inputs, labels in iterate_batches(dataset, settings.batch_size, generator):
        inputs, labels = batch_to_model(inputs, labels, device, dtype)
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()

        # Weight each batch mean by its size so a short last batch counts
        # as many samples as it has.
        total_loss += loss.detach() * len(labels)
        correct += (logits.detach().argmax(dim=1) == labels).sum()
        count += len(labels)
    return total_loss.item() / count, correct.item() / count


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Return a generator for the data order of one epoch.

    Deriving it from ``(seed, epoch)`` alone makes the order of every epoch
    reproducible without saving any data-loader state in checkpoints.
    """
    entropy = np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(entropy))


def _seed_global_rng(seed: int, device: torch.device) -> None:
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def _restore(
    checkpoint: Mapping[str, Any],
    settings: TrainingSettings,
    has_test_dataset: bool,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    history: TrainingHistory,
    device: torch.device,
) -> int:
    """Load a checkpoint into the training objects and return its epoch."""
    validate_checkpoint(checkpoint, "resume_from")
    saved = dict(checkpoint["settings"])
    current = settings.to_dict()
    for key, value in current.items():
        if key != "epochs" and saved.get(key) != value:
            raise ValueError(
                f"resume_from was trained with {key}={saved.get(key)!r}, but this "
                f"run has {key}={value!r}; resume with the same settings (only "
                "epochs may change)"
            )
    epoch = int(checkpoint["epoch"])
    if epoch > settings.epochs:
        raise ValueError(
            f"resume_from has already completed {epoch} epochs, more than "
            f"epochs={settings.epochs}"
        )
    saved_history = TrainingHistory.from_dict(checkpoint["history"])
    if bool(saved_history.test_loss) != has_test_dataset and epoch > 0:
        raise ValueError(
            "resume_from and this run differ in having a test_dataset; pass a "
            "test_dataset exactly when the checkpointed run had one"
        )

    restore_states(checkpoint, model, optimizer, scheduler, device)
    for name, values in saved_history.to_dict().items():
        getattr(history, name).extend(values)
    return epoch


def _log_epoch(history: TrainingHistory, epochs: int) -> None:
    message = "epoch %d/%d: lr %.4g, train loss %.4f, train accuracy %.4f"
    arguments: list[Any] = [
        history.epoch[-1],
        epochs,
        history.lr[-1],
        history.train_loss[-1],
        history.train_accuracy[-1],
    ]
    if history.test_loss:
        message += ", test loss %.4f, test accuracy %.4f"
        arguments += [history.test_loss[-1], history.test_accuracy[-1]]
    message += " (%.1f s)"
    arguments.append(history.seconds[-1])
    logger.info(message, *arguments)


def _describe(settings: TrainingSettings) -> str:
    return ", ".join(
        f"{key}={value}" for key, value in settings.to_dict().items() if key != "epochs"
    )


def _check_int(value: object, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _check_number(
    value: object, name: str, valid: Callable[[float], bool], rule: str
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and valid(value)):
        raise ValueError(f"{name} must be {rule}, got {value}")
