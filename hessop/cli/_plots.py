"""PNG figures of an analysis report, drawn with matplotlib's Agg canvas.

Every figure is drawn from the JSON records of ``report.json`` alone, so a
resumed run redraws all figures, including those of metrics computed in an
earlier run. The figures use :class:`matplotlib.figure.Figure` with an Agg
canvas directly, so they never touch pyplot's global state or need a
display.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hessop.cli._report import write_with

logger = logging.getLogger(__name__)

DPI = 150
LOSS_LABEL = "loss (cross-entropy, nats)"
# The log axis of the density ends at this fraction of the height of one
# isolated eigenvalue, 1 / (n sigma sqrt(2 pi)). Lower values are the tails
# of the Gaussian kernel, not eigenvalues.
DENSITY_FLOOR = 0.1


def available() -> bool:
    """Return whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw_all(report: Mapping[str, Any], out: Path) -> dict[str, str]:
    """Draw every figure that the report's metrics allow.

    Returns
    -------
    dict of str to str
        Figure name to file name in ``out``.
    """
    metrics = report.get("metrics", {})
    subtitle = _subtitle(report)
    written: dict[str, str] = {}

    def save(name: str, figure: Any) -> None:
        path = out / f"{name}.png"
        write_with(path, lambda file: figure.savefig(file, format="png", dpi=DPI))
        written[name] = path.name

    density = _complete(metrics, "density")
    if density is not None:
        eigen = _complete(metrics, "eigenvalues")
        top = None if eigen is None else eigen["eigenvalues"][0]
        save("density", density_figure(density, top, subtitle))

    blocks = _complete(metrics, "blocks")
    if blocks is not None and blocks["blocks"]:
        save("blocks", blocks_figure(blocks, subtitle))

    landscape = metrics.get("landscape")
    if landscape is not None:
        parts = landscape.get("parts", {})
        if any(key.endswith("_1d") for key in parts):
            save("landscape_1d", line_figure(landscape, subtitle))
        for kind in ("eigen", "random"):
            part = parts.get(f"{kind}_2d")
            if part is None:
                continue
            save(
                f"landscape_2d_{kind}_contour",
                contour_figure(part, _axis_labels(kind), _plane_title(kind), subtitle),
            )
            save(
                f"landscape_2d_{kind}_surface",
                surface_figure(
                    part, _short_axis_labels(kind), _plane_title(kind), subtitle
                ),
            )
    return written


def _complete(metrics: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    record = metrics.get(name)
    if record is None or record.get("status") != "complete":
        return None
    return record


def _subtitle(report: Mapping[str, Any]) -> str:
    describe = report.get("description", {})
    return f"{describe.get('title', '')}\n{describe.get('checkpoint', '')}".strip()


def _figure(width: float = 6.4, height: float = 4.8) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _title(figure: Any, title: str, subtitle: str) -> None:
    figure.suptitle(f"{title}\n{subtitle}", fontsize="medium")


def _array(values: Any) -> np.ndarray:
    """Convert a JSON list to floats; ``null`` (a non-finite loss) becomes NaN."""
    return np.array(
        [np.nan if v is None else v for v in np.ravel(np.array(values, dtype=object))],
        dtype=np.float64,
    ).reshape(np.shape(values))


def density_figure(
    record: Mapping[str, Any], top_eigenvalue: float | None, subtitle: str
) -> Any:
    """Smoothed eigenvalue density on a log axis, as in PyHessian's Figure 3."""
    grid, values = _array(record["grid"]), _array(record["density"])

    figure = _figure()
    axes = figure.add_subplot()
    single = 1.0 / (record["dimension"] * record["sigma"] * math.sqrt(2 * math.pi))
    floor = DENSITY_FLOOR * single
    axes.semilogy(grid, np.maximum(values, floor), color="tab:blue", linewidth=1.2)
    axes.set_ylim(bottom=floor)

    axes.set_xlabel(r"eigenvalue $\lambda$ of the Hessian")
    axes.set_ylabel("density (log scale)")
    if top_eigenvalue is not None:
        axes.axvline(
            top_eigenvalue,
            color="tab:red",
            linestyle="--",
            linewidth=1,
            label=rf"top eigenvalue $\lambda_1$ = {top_eigenvalue:.4g} (Lanczos)",
        )
    axes.plot(
        [],
        [],
        " ",
        label=(
            f"SLQ: {record['num_probes']} probe(s) x {record['num_steps']} steps, "
            f"Gaussian $\\sigma$ = {record['sigma']:.3g}"
        ),
    )
    axes.legend(loc="upper right", fontsize="small")
    axes.grid(True, which="major", alpha=0.3)
    _title(figure, "Hessian eigenvalue density", subtitle)
    return figure


def blocks_figure(record: Mapping[str, Any], subtitle: str) -> Any:
    """Bars of the trace and top eigenvalue of each parameter block."""
    blocks = record["blocks"]
    labels = [block["label"] for block in blocks]
    traces = np.array([block["trace"] for block in blocks], dtype=np.float64)
    errors = np.array(
        [block["trace_stderr"] or 0.0 for block in blocks], dtype=np.float64
    )
    tops = np.array([block["top_eigenvalue"] for block in blocks], dtype=np.float64)
    positions = np.arange(len(blocks))

    figure = _figure(max(6.4, 1.2 * len(blocks) + 3.0), 4.8)
    trace_axes, top_axes = figure.subplots(1, 2)
    trace_axes.bar(
        positions, traces, yerr=errors, capsize=4, color="tab:blue", alpha=0.85
    )
    trace_axes.set_ylabel("trace of the block Hessian")
    trace_axes.set_title("trace ± standard error", fontsize="medium")
    top_axes.bar(positions, tops, color="tab:orange", alpha=0.85)
    top_axes.set_ylabel("top eigenvalue of the block Hessian")
    top_axes.set_title("top eigenvalue", fontsize="medium")
    for axes in (trace_axes, top_axes):
        axes.set_xticks(positions, labels, rotation=30 if len(blocks) > 4 else 0)
        axes.set_xlabel("parameter block")
        axes.grid(True, axis="y", alpha=0.3)
    _title(figure, "Stage-wise (block) Hessian", subtitle)
    return figure


def _axis_labels(kind: str) -> tuple[str, str]:
    if kind == "eigen":
        return (
            r"$\epsilon_1$, step along top eigenvector $v_1$ (parameter distance)",
            r"$\epsilon_2$, step along second eigenvector $v_2$",
        )
    return (
        r"$\alpha$, step along random direction $d_1$ (filter norms)",
        r"$\beta$, step along random direction $d_2$ (filter norms)",
    )


def _short_axis_labels(kind: str) -> tuple[str, str]:
    if kind == "eigen":
        return r"$\epsilon_1$ (along $v_1$)", r"$\epsilon_2$ (along $v_2$)"
    return r"$\alpha$ (along $d_1$)", r"$\beta$ (along $d_2$)"


def _levels(losses: np.ndarray, count: int) -> tuple[np.ndarray, Any]:
    """Return contour levels and a colour norm for the finite losses.

    Losses that span more than a factor of 20 get logarithmic levels, so the
    basin around the center keeps several contours instead of one.
    """
    from matplotlib.colors import LogNorm

    finite = losses[np.isfinite(losses)]
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.linspace(low - 0.5, low + 0.5, count), None
    if low > 0 and high / low > 20:
        return np.geomspace(low, high, count), LogNorm(low, high)
    return np.linspace(low, high, count), None


def _plane_title(kind: str) -> str:
    if kind == "eigen":
        return "Loss landscape along the top two Hessian eigenvectors"
    return "Loss landscape along two random filter-normalised directions"


def line_figure(record: Mapping[str, Any], subtitle: str) -> Any:
    """Draw the 1D loss curves, one panel per direction kind."""
    parts = record["parts"]
    kinds = [kind for kind in ("eigen", "random") if f"{kind}_1d" in parts]
    figure = _figure(6.0 * len(kinds), 4.8)
    panels = figure.subplots(1, len(kinds), squeeze=False)[0]
    for axes, kind in zip(panels, kinds, strict=True):
        part = parts[f"{kind}_1d"]
        alphas, losses = _array(part["alphas"]), _array(part["losses"])
        axes.plot(alphas, losses, marker="o", markersize=3, label="loss")
        eigen = record.get("eigen")
        if kind == "eigen" and eigen is not None:
            slope = eigen["gradient_dot_v1"]
            curvature = eigen["eigenvalues_used"][0]
            center = part["center_loss"]
            fine = np.linspace(alphas.min(), alphas.max(), 200)
            axes.plot(
                fine,
                center + slope * fine + 0.5 * curvature * fine**2,
                linestyle="--",
                color="tab:red",
                label=rf"second-order Taylor model, $\lambda_1$ = {curvature:.4g}",
            )
        axes.set_xlabel(_axis_labels(kind)[0])
        axes.set_ylabel(LOSS_LABEL)
        axes.set_title(
            "along the top eigenvector"
            if kind == "eigen"
            else "along a random filter-normalised direction",
            fontsize="medium",
        )
        axes.legend(fontsize="small")
        axes.grid(True, alpha=0.3)
    _title(figure, "1D loss landscape", subtitle)
    return figure


def contour_figure(
    part: Mapping[str, Any], labels: tuple[str, str], title: str, subtitle: str
) -> Any:
    """Filled contour plot of a 2D landscape with the center marked."""
    alphas, betas = _array(part["alphas"]), _array(part["betas"])
    losses = np.ma.masked_invalid(_array(part["losses"]))

    figure = _figure(6.4, 5.6)
    axes = figure.add_subplot()
    # losses[i, j] is at (alphas[i], betas[j]), so the transpose has alpha
    # along the horizontal axis.
    levels, norm = _levels(_array(part["losses"]), 30)
    filled = axes.contourf(
        alphas, betas, losses.T, levels=levels, norm=norm, cmap="viridis"
    )
    axes.contour(
        alphas,
        betas,
        losses.T,
        levels=levels[::2],
        colors="white",
        linewidths=0.4,
        alpha=0.6,
    )
    axes.plot([0.0], [0.0], marker="*", color="red", markersize=10, label=r"$\theta$")
    # Ticks at every fifth level, which are evenly spaced on the colour scale
    # for both linear and logarithmic levels.
    colorbar = figure.colorbar(filled, ax=axes, shrink=0.85, ticks=levels[::5])
    colorbar.ax.set_yticklabels([f"{level:.3g}" for level in levels[::5]])
    colorbar.ax.minorticks_off()
    colorbar.set_label(LOSS_LABEL)
    axes.set_xlabel(labels[0])
    axes.set_ylabel(labels[1])
    axes.set_aspect("equal")
    axes.legend(loc="upper right", fontsize="small")
    _title(figure, title, subtitle)
    return figure


def surface_figure(
    part: Mapping[str, Any], labels: tuple[str, str], title: str, subtitle: str
) -> Any:
    """3D surface of a 2D landscape, as in PyHessian's Figure 1."""
    import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3d projection)

    alphas, betas = _array(part["alphas"]), _array(part["betas"])
    losses = _array(part["losses"])
    grid_alpha, grid_beta = np.meshgrid(alphas, betas, indexing="ij")
    figure = _figure(7.0, 6.4)
    axes = figure.add_subplot(projection="3d")
    axes.set_box_aspect(None, zoom=0.85)
    finite = np.isfinite(losses)
    plotted = np.where(finite, losses, np.nanmax(losses[finite]) if finite.any() else 0)
    axes.plot_surface(
        grid_alpha, grid_beta, plotted, cmap="viridis", linewidth=0, antialiased=True
    )
    from matplotlib.ticker import MaxNLocator

    for axis in (axes.xaxis, axes.yaxis, axes.zaxis):
        axis.set_major_locator(MaxNLocator(5))
    axes.set_xlabel(labels[0], labelpad=8)
    axes.set_ylabel(labels[1], labelpad=8)
    axes.set_zlabel("loss (nats)", labelpad=8)
    axes.view_init(elev=30, azim=-60)
    _title(figure, title, subtitle)
    return figure
