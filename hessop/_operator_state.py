"""The model side of :class:`hessop.HessianOperator`: state, samples and checks."""

from __future__ import annotations

import copy
import logging
import math
import warnings

import torch

from hessop._data import count_samples
from hessop._model import state_fingerprint
from hessop._mpi import (
    allreduce_int,
    allreduce_sum,
    check_same_everywhere,
    run_collectively,
    state_checksum,
)
from hessop._operator_checks import nondeterminism_message

logger = logging.getLogger(__name__)

# Seed of the probe vector that the determinism check multiplies twice.
_CHECK_SEED = 0


class OperatorState:
    """Construction helpers of :class:`hessop.HessianOperator`.

    They keep the working model and the parameter aliases in step with the
    caller's model, count the samples and check that the operator is a
    fixed matrix. The operator sets the attributes they read.
    """

    def _check_ranks_agree(self) -> None:
        """Raise on every rank unless all ranks hold the same parameters."""
        if self.comm is None:
            return
        check_same_everywhere(
            self.comm,
            (self.layout.names, self.layout.shapes, str(self.torch_dtype)),
            "the parameter layout (names, shapes and dtype)",
            "build the same model and pass the same params on every rank",
        )
        state = [(name, p) for name, p in self._model.named_parameters()]
        state += [(name, b) for name, b in self._model.named_buffers()]
        check_same_everywhere(
            self.comm,
            state_checksum(state),
            "the parameter and buffer values (SHA-256 of their bytes)",
            "load the same weights on every rank, for instance by broadcasting "
            "rank 0's state_dict",
        )

    def _sync_with_model(self) -> None:
        """Rebuild the working model and parameter aliases if the model changed."""
        fingerprint = state_fingerprint(self._caller_model)
        if fingerprint == self._fingerprint:
            return
        if self._fingerprint is not None:
            logger.debug("model state changed; rebuilding the Hessian operator's cache")
        self._graph_cache.clear()
        self._unlinearized.clear()
        self._compiled_product = None

        if self._copy_model:
            try:
                model = copy.deepcopy(self._caller_model)
            except Exception as error:
                raise TypeError(
                    f"cannot copy the model to convert it to {self.torch_dtype} on "
                    f"{self.device}: {error}; convert the model yourself and pass "
                    "dtype=None, device=None"
                ) from error
            self._model = model.to(device=self.device, dtype=self.torch_dtype)
        else:
            self._model = self._caller_model

        selected = set(self.layout.names)
        leaves = []
        for entry in self.layout:
            try:
                parameter = self._model.get_parameter(entry.name)
            except AttributeError:
                raise ValueError(
                    f"parameter {entry.name!r} is no longer part of the model; "
                    "build a new HessianOperator after changing the model's structure"
                ) from None
            if tuple(parameter.shape) != entry.shape:
                raise ValueError(
                    f"parameter {entry.name!r} changed shape from {entry.shape} to "
                    f"{tuple(parameter.shape)}; build a new HessianOperator"
                )
            leaves.append(parameter.detach().requires_grad_(True))
        self._leaves = leaves
        # The other parameters enter as constants, so autograd builds no graph
        # for them. Tied aliases of selected parameters are left out: the
        # functional call ties them to the value given under the first name.
        self._fixed = {
            name: parameter.detach()
            for name, parameter in self._model.named_parameters()
            if name not in selected
        }
        self._fingerprint = fingerprint

    def _count_samples(self) -> tuple[int, int]:
        num_samples = 0
        num_batches = 0
        for index, (inputs, targets) in enumerate(self._source):
            num_batches += 1
            num_samples += count_samples(inputs, targets, index, self._num_samples_fn)
        return num_samples, num_batches

    def _check_deterministic(self) -> None:
        """Multiply one vector twice and raise if the results differ."""
        n = self.shape[0]
        generator = torch.Generator().manual_seed(_CHECK_SEED)
        v = torch.randn(1, n, generator=generator, dtype=torch.float64)
        v = v.to(device=self.device, dtype=self.torch_dtype)

        first, samples_first, batches_first = run_collectively(
            self.comm,
            lambda: self._pass(v, use_cache=False),
            "the first product of the determinism check",
        )
        self.num_local_samples, self.num_batches = samples_first, batches_first
        self.num_samples = allreduce_int(self.comm, samples_first)
        if self.num_samples == 0:
            return
        allreduce_sum(self.comm, first)

        def second_pass() -> torch.Tensor:
            second, samples_second, _ = self._pass(v, use_cache=True)
            if samples_second != samples_first:
                raise ValueError(
                    "the data changed size between two passes "
                    f"({samples_first} then {samples_second} samples); the "
                    "operator needs the same samples on every pass"
                )
            return second

        second = run_collectively(
            self.comm, second_pass, "the second product of the determinism check"
        )
        allreduce_sum(self.comm, second)
        graphless = allreduce_int(self.comm, len(self._graphless_batches))
        if graphless == allreduce_int(self.comm, batches_first):
            warnings.warn(
                "the loss does not depend on the selected parameters in any batch "
                "(no gradient graph), so the Hessian is zero; check params and "
                "that loss_fn is not computed under torch.no_grad()",
                UserWarning,
                stacklevel=3,
            )

        difference = float(torch.linalg.vector_norm(first - second))
        scale = max(
            float(torch.linalg.vector_norm(first)),
            float(torch.linalg.vector_norm(second)),
        )
        tolerance = math.sqrt(torch.finfo(self.torch_dtype).eps)
        if difference > tolerance * scale:
            raise ValueError(
                nondeterminism_message(
                    self._model, self._train_mode, difference / scale, tolerance
                )
            )
