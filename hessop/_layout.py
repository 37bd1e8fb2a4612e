"""Layout of a block of parameters inside one flat vector."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = ["ParameterInfo", "ParameterLayout"]


@dataclass(frozen=True)
class ParameterInfo:
    """Position of one parameter tensor inside the flat vector.

    Attributes
    ----------
    name : str
        The parameter's name in ``model.named_parameters()``.
    shape : tuple of int
        The parameter's shape.
    offset : int
        Index of the parameter's first entry in the flat vector.
    numel : int
        Number of scalar entries, ``prod(shape)``.
    """

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int

    @property
    def slice(self) -> slice:
        """Slice of the flat vector that holds this parameter."""
        return slice(self.offset, self.offset + self.numel)


class ParameterLayout(Sequence[ParameterInfo]):
    """Names, shapes and offsets of the parameters behind a flat vector.

    Entry ``i`` of a flat vector belongs to the parameter whose ``slice``
    contains ``i``; inside a parameter, entries follow PyTorch's row-major
    (C) order, as ``tensor.reshape(-1)`` gives them.

    Parameters
    ----------
    names : sequence of str
        Parameter names, in the order of the flat vector.
    shapes : sequence of tuple of int
        The shape of each parameter.
    """

    def __init__(self, names: Sequence[str], shapes: Sequence[Sequence[int]]):
        if len(names) != len(shapes):
            raise ValueError(
                f"names and shapes differ in length: {len(names)} names, "
                f"{len(shapes)} shapes"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"parameter names must be unique, got {list(names)}")
        entries = []
        offset = 0
        for name, shape in zip(names, shapes, strict=True):
            shape = tuple(int(s) for s in shape)
            numel = math.prod(shape)
            entries.append(ParameterInfo(name, shape, offset, numel))
            offset += numel
        self._entries: tuple[ParameterInfo, ...] = tuple(entries)
        self._by_name = {entry.name: entry for entry in entries}
        self.size: int = offset
        """Total number of scalar entries, the length of the flat vector."""

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, str):
            try:
                return self._by_name[index]
            except KeyError:
                raise KeyError(
                    f"no parameter named {index!r} in the layout; "
                    f"the names are {self.names}"
                ) from None
        return self._entries[index]

    def __iter__(self) -> Iterator[ParameterInfo]:
        return iter(self._entries)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return item in self._by_name
        return item in self._entries

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParameterLayout):
            return NotImplemented
        return self._entries == other._entries

    def __hash__(self) -> int:
        return hash(self._entries)

    def __repr__(self) -> str:
        lines = [f"ParameterLayout(size={self.size}, parameters={len(self)})"]
        for entry in self._entries:
            lines.append(f"  {entry.name}: shape={entry.shape}, offset={entry.offset}")
        return "\n".join(lines)

    @property
    def names(self) -> list[str]:
        """Parameter names in the order of the flat vector."""
        return [entry.name for entry in self._entries]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Parameter shapes in the order of the flat vector."""
        return [entry.shape for entry in self._entries]

    @property
    def offsets(self) -> list[int]:
        """Offset of each parameter's first entry in the flat vector."""
        return [entry.offset for entry in self._entries]

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector into a name -> tensor dict.

        Parameters
        ----------
        vector : torch.Tensor
            Shape ``(size,)``, or ``(size, k)`` for ``k`` vectors at once.

        Returns
        -------
        dict of str to torch.Tensor
            Views into ``vector`` (no copy) of each parameter's shape, with a
            trailing dimension ``k`` for a 2-D input.
        """
        if not isinstance(vector, torch.Tensor):
            raise TypeError(
                f"vector must be a torch.Tensor, got {type(vector).__name__}; "
                "convert a numpy array with torch.from_numpy"
            )
        if vector.ndim not in (1, 2) or vector.shape[0] != self.size:
            raise ValueError(
                f"vector must have shape ({self.size},) or ({self.size}, k), "
                f"got {tuple(vector.shape)}"
            )
        trailing = tuple(vector.shape[1:])
        return {
            entry.name: vector[entry.slice].reshape(entry.shape + trailing)
            for entry in self._entries
        }

    def flatten(
        self, tensors: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Concatenate per-parameter tensors into one flat vector.

        Parameters
        ----------
        tensors : mapping of str to torch.Tensor, or sequence of torch.Tensor
            One tensor per parameter of the layout, of the parameter's shape.
            A mapping must hold exactly the layout's names; a sequence must
            follow the layout's order.

        Returns
        -------
        torch.Tensor
            Shape ``(size,)``, on the device and with the dtype of the inputs.
        """
        if isinstance(tensors, Mapping):
            missing = [name for name in self.names if name not in tensors]
            extra = [name for name in tensors if name not in self._by_name]
            if missing or extra:
                raise ValueError(
                    "tensors must have exactly the layout's parameter names; "
                    f"missing {missing}, unexpected {extra}"
                )
            ordered = [tensors[name] for name in self.names]
        else:
            ordered = list(tensors)
            if len(ordered) != len(self):
                raise ValueError(
                    f"expected {len(self)} tensors, one per parameter, "
                    f"got {len(ordered)}"
                )
        for entry, tensor in zip(self._entries, ordered, strict=True):
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(
                    f"the value for {entry.name!r} must be a torch.Tensor, "
                    f"got {type(tensor).__name__}"
                )
            if tuple(tensor.shape) != entry.shape:
                raise ValueError(
                    f"shape mismatch for {entry.name!r}: expected {entry.shape}, "
                    f"got {tuple(tensor.shape)}"
                )
        if not ordered:
            return torch.zeros(0)
        return torch.cat([tensor.reshape(-1) for tensor in ordered])
