"""scipy's LinearOperator methods of :class:`hessop.HessianOperator`."""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator

from hessop._mpi import run_collectively
from hessop._operator_checks import check_numeric


class ScipyInterface(LinearOperator):
    """The ``matvec`` and ``matmat`` side of the operator.

    The public methods validate their argument on every rank. The private
    hooks convert it to torch in blocks of ``block_size`` columns and
    multiply them with the operator's ``_apply_blocks``. The operator is
    symmetric, so the adjoint and the transpose are the operator itself.
    """

    def dot(self, x):
        """Multiply by a vector, a matrix, a scalar or another LinearOperator."""
        if not isinstance(x, LinearOperator) and not np.isscalar(x):
            x = np.asanyarray(x)
            run_collectively(
                self.comm, lambda: self._check_array(x, "x", (1, 2)), "checking x"
            )
        return super().dot(x)

    def matvec(self, x):
        """Multiply by a vector of shape ``(n,)`` or ``(n, 1)``."""
        x = np.asanyarray(x)
        run_collectively(
            self.comm, lambda: self._check_array(x, "x", (1,)), "checking x"
        )
        return super().matvec(x)

    def matmat(self, X):
        """Multiply by a matrix of shape ``(n, k)``."""
        X = np.asanyarray(X)
        run_collectively(
            self.comm, lambda: self._check_array(X, "X", (2,)), "checking X"
        )
        return super().matmat(X)

    def _check_array(self, x: np.ndarray, name: str, ndims: tuple[int, ...]) -> None:
        n = self.shape[0]
        if ndims == (1,):
            valid = x.shape in ((n,), (n, 1))
            expected = f"({n},) or ({n}, 1)"
        else:
            valid = x.ndim in ndims and x.shape[0] == n
            expected = f"({n},) or ({n}, k)" if 1 in ndims else f"({n}, k)"
        if not valid:
            raise ValueError(
                f"dimension mismatch: the operator has shape ({n}, {n}), so {name} "
                f"must have shape {expected}; got {x.shape}"
            )
        check_numeric(x, name)

    def rmatvec(self, x):
        """Multiply by a vector from the left, the same as ``matvec``."""
        return self.matvec(x)

    def rmatmat(self, X):
        """Multiply by a matrix from the left, the same as ``matmat``."""
        return self.matmat(X)

    def _matvec(self, x):
        return self._matmat(np.asarray(x).reshape(-1, 1)).reshape(-1)

    def _matmat(self, X):
        X = np.asarray(X)
        out_dtype = np.result_type(X.dtype, self.dtype)
        if np.iscomplexobj(X):
            k = X.shape[1]
            Y = self._matmat_real(np.concatenate([X.real, X.imag], axis=1))
            return (Y[:, :k] + 1j * Y[:, k:]).astype(out_dtype, copy=False)
        return self._matmat_real(X).astype(out_dtype, copy=False)

    def _matmat_real(self, X: np.ndarray) -> np.ndarray:
        Y = np.empty(X.shape, dtype=self.dtype)

        def block(start: int, stop: int) -> torch.Tensor:
            return torch.as_tensor(
                np.ascontiguousarray(X[:, start:stop].T),
                dtype=self.torch_dtype,
                device=self.device,
            )

        def store(start: int, stop: int, result: torch.Tensor) -> None:
            Y[:, start:stop] = result.T.cpu().numpy()

        self._apply_blocks(X.shape[1], block, store)
        return Y

    def _rmatvec(self, x):
        return self._matvec(x)

    def _rmatmat(self, X):
        return self._matmat(X)

    def _adjoint(self):
        return self

    def _transpose(self):
        return self
