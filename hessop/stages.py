"""Parameter blocks for stage-wise (block) Hessian metrics.

A block is a named group of a model's parameters. The Hessian restricted to
a block, :math:`H_{BB} = \\nabla^2_{\\theta_B} L`, is the operator that
:class:`hessop.HessianOperator` builds with ``params=<the block's names>``.
Its top eigenvalue and trace show how the curvature is spread over the
network, as in the stage-wise study of Yao et al. (2020).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable

from torch import nn

__all__ = ["default_blocks", "parameter_blocks", "select_block"]

# Characters that make a pattern a shell-style glob rather than a plain name.
_GLOB_CHARACTERS = frozenset("*?[")
# Prefix that makes a pattern a regular expression.
REGEX_PREFIX = "re:"


def default_blocks(model: nn.Module) -> dict[str, list[str]]:
    """Return the model's natural parameter blocks: its stages.

    A model with a ``STAGE_NAMES`` attribute, such as
    :class:`hessop.models.CifarResNet` (``stage1``, ``stage2``,
    ``stage3``), gets one block per stage. Any other model gets one block per
    direct submodule that has trainable parameters, in registration order
    (``conv1``, ``conv2`` and ``classifier`` of the small CNN). When only one
    submodule has trainable parameters and it has submodules of its own, as
    the ``layers`` container of the MLP, its submodules are the blocks
    instead (``layers.0``, ``layers.2``, ...).

    Parameters
    ----------
    model : torch.nn.Module
        The network.

    Returns
    -------
    dict of str to list of str
        Block name to the names of its parameters with ``requires_grad``, in
        the order of ``model.named_parameters()``.

    Raises
    ------
    ValueError
        If no block has trainable parameters.
    """
    stage_names = getattr(model, "STAGE_NAMES", None)
    if stage_names is not None:
        candidates = [str(name) for name in stage_names]
    else:
        candidates = _child_names(model)

    blocks = {}
    for name in candidates:
        names = _parameters_under(model, name)
        if names:
            blocks[name] = names
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no submodule with trainable parameters "
            "to use as a block; pass block patterns such as 'layer1.*'"
        )
    return blocks


def select_block(model: nn.Module, pattern: str) -> list[str]:
    """Return the names of the trainable parameters that ``pattern`` selects.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    pattern : str
        One of

        - a submodule name (``"stage2"``, ``"stage2.0"``): its parameters;
        - a parameter name (``"classifier.weight"``): that parameter;
        - a shell-style glob over parameter names (``"stage*.*.bn?.*"``,
          ``"*.conv1.weight"``), matched with :func:`fnmatch.fnmatchcase`,
          where ``*`` also matches dots;
        - ``"re:"`` followed by a regular expression that must match a whole
          parameter name (``"re:stage[12]\\..*"``).

    Returns
    -------
    list of str
        Parameter names in the order of ``model.named_parameters()``. Only
        parameters with ``requires_grad`` are selected.

    Raises
    ------
    ValueError
        If the pattern is empty, an invalid regular expression, or selects
        no trainable parameter. The message lists close parameter or
        submodule names.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError(f"a block pattern must be a non-empty string, got {pattern!r}")
    trainable = [
        name for name, tensor in model.named_parameters() if tensor.requires_grad
    ]

    if pattern.startswith(REGEX_PREFIX):
        expression = pattern[len(REGEX_PREFIX) :]
        try:
            compiled = re.compile(expression)
        except re.error as error:
            raise ValueError(
                f"block pattern {pattern!r} is not a valid regular expression: {error}"
            ) from None
        selected = [name for name in trainable if compiled.fullmatch(name)]
    elif _GLOB_CHARACTERS & set(pattern):
        selected = [name for name in trainable if fnmatch.fnmatchcase(name, pattern)]
    elif pattern in trainable:
        selected = [pattern]
    else:
        selected = _parameters_under(model, pattern)

    if not selected:
        known = trainable + [name for name, _ in model.named_modules() if name]
        close = difflib.get_close_matches(pattern, known, n=3)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise ValueError(
            f"block pattern {pattern!r} selects no trainable parameter of "
            f"{type(model).__name__}{hint}. A pattern is a submodule or parameter "
            "name, a glob such as 'stage1.*', or 're:' and a regular expression"
        )
    return selected


def parameter_blocks(
    model: nn.Module, patterns: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """Resolve block specifications to parameter names.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    patterns : iterable of str, optional
        Block specifications ``"PATTERN"`` or ``"LABEL=PATTERN"``, with
        ``PATTERN`` as in :func:`select_block`. The label names the block in
        results and defaults to the pattern itself. ``None`` returns
        :func:`default_blocks`.

    Returns
    -------
    dict of str to list of str
        Label to parameter names, in the order given. Blocks may overlap.

    Raises
    ------
    ValueError
        For a pattern that selects nothing, an empty label, or a label used
        twice.

    Examples
    --------
    >>> from hessop.models import build_model
    >>> from hessop.stages import parameter_blocks
    >>> model = build_model("resnet8", num_classes=10, in_channels=1, seed=0)
    >>> blocks = parameter_blocks(model, ["stage1", "head=classifier.*"])
    >>> list(blocks), blocks["head"]
    (['stage1', 'head'], ['classifier.weight', 'classifier.bias'])
    """
    if patterns is None:
        return default_blocks(model)
    if isinstance(patterns, str):
        patterns = [patterns]

    blocks: dict[str, list[str]] = {}
    for specification in patterns:
        label, pattern = split_label(specification)
        if label in blocks:
            raise ValueError(
                f"block label {label!r} is used twice; give each block its own "
                "label with LABEL=PATTERN"
            )
        blocks[label] = select_block(model, pattern)
    if not blocks:
        raise ValueError("patterns is empty; pass at least one block pattern or None")
    return blocks


def split_label(specification: str) -> tuple[str, str]:
    """Split ``"LABEL=PATTERN"`` into its label and pattern.

    A specification without ``=`` before any glob or regular-expression
    character is its own label. A ``=`` inside a regular expression
    (``"re:a=b"``) therefore needs an explicit label (``"x=re:a=b"``).
    """
    if not isinstance(specification, str):
        raise ValueError(
            f"a block specification must be a string, got {specification!r}"
        )
    head, separator, tail = specification.partition("=")
    if (
        separator
        and not head.startswith(REGEX_PREFIX)
        and not (_GLOB_CHARACTERS & set(head))
    ):
        label, pattern = head.strip(), tail.strip()
        if not label:
            raise ValueError(
                f"block specification {specification!r} has an empty label; "
                "write LABEL=PATTERN or PATTERN"
            )
        return label, pattern
    return specification.strip(), specification.strip()


def _child_names(model: nn.Module) -> list[str]:
    """Return the names of the submodules with trainable parameters.

    A single such submodule that is itself a container is replaced by its
    own submodules, repeatedly.
    """
    prefix, module = "", model
    while True:
        children = [
            (name, child)
            for name, child in module.named_children()
            if any(p.requires_grad for p in child.parameters())
        ]
        if len(children) == 1 and any(True for _ in children[0][1].children()):
            name, module = children[0]
            prefix += name + "."
            continue
        return [prefix + name for name, _ in children]


def _parameters_under(model: nn.Module, module_name: str) -> list[str]:
    """Return the trainable parameter names below a submodule, [] if none."""
    modules = dict(model.named_modules())
    if module_name not in modules or module_name == "":
        return []
    prefix = module_name + "."
    return [
        name
        for name, tensor in model.named_parameters()
        if tensor.requires_grad and name.startswith(prefix)
    ]
