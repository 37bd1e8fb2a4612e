"""PNG figures of ``hessop study``, drawn from the study record alone.

The figures follow PyHessian's (Yao et al. 2020): the Hessian trace against
epoch (their Figure 2), the spectral density at a few epochs (Figure 3), the
stage-wise trace against epoch (Figure 4) and the loss landscape along the
top two eigenvectors at the end of training (Figure 1), plus the top
eigenvalue against epoch. Curves and error bars are means over the seeds and
the errors of :func:`hessop.cli._study_tables.combine`. Densities and
landscapes are those of the first seed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hessop.cli._plots import DENSITY_FLOOR, _array, _figure
from hessop.cli._report import write_with
from hessop.cli._study_tables import combine

# Small figures keep the PNG files of a study (and of the docs) light.
DPI = 100


def _series(
    variant: Mapping[str, Any], value: Callable[[Mapping[str, Any]], tuple]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return epochs, means over seeds and errors of one checkpoint quantity."""
    seeds = variant["seeds"]
    epochs = [point["epoch"] for point in seeds[0]["checkpoints"]]
    means, errors = [], []
    for index in range(len(epochs)):
        pairs = [value(seed["checkpoints"][index]) for seed in seeds]
        mean, error = combine([p[0] for p in pairs], [p[1] for p in pairs])
        means.append(mean)
        errors.append(np.nan if error is None else error)
    return np.array(epochs), np.array(means), np.array(errors)


def _lines(
    axes: Any,
    study: Mapping[str, Any],
    value: Callable[[Mapping[str, Any]], tuple],
) -> None:
    for variant in study["variants"].values():
        epochs, means, errors = _series(variant, value)
        axes.errorbar(
            epochs,
            means,
            yerr=None if np.all(np.isnan(errors)) else np.nan_to_num(errors),
            marker="o",
            markersize=4,
            capsize=3,
            label=f"{variant['label']}, lr {variant['lr']:g}",
        )
    axes.set_xlabel("epoch")
    axes.grid(True, alpha=0.3)


def _subtitle(study: Mapping[str, Any]) -> str:
    settings = study["settings"]
    seeds = settings["seeds"]
    return (
        f"{settings['data']}, loss on {settings['num_samples']} training samples, "
        f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    )


def trace_figure(study: Mapping[str, Any]) -> Any:
    """Hessian trace against epoch, one curve per variant."""
    figure = _figure(6.4, 4.4)
    axes = figure.add_subplot()
    _lines(axes, study, lambda point: (point["trace"], point["trace_stderr"]))
    axes.set_yscale("log")
    axes.set_ylabel("trace of the Hessian (log scale)")
    axes.legend(fontsize="small")
    figure.suptitle(
        f"Hessian trace ± standard error during training\n{_subtitle(study)}",
        fontsize="medium",
    )
    return figure


def top_eigenvalue_figure(study: Mapping[str, Any]) -> Any:
    """Top Hessian eigenvalue against epoch, one curve per variant."""
    figure = _figure(6.4, 4.4)
    axes = figure.add_subplot()
    _lines(axes, study, lambda point: (point["eigenvalues"][0], None))
    axes.set_yscale("log")
    axes.set_ylabel(r"top eigenvalue $\lambda_1$ (log scale)")
    axes.legend(fontsize="small")
    figure.suptitle(
        f"Top Hessian eigenvalue during training\n{_subtitle(study)}",
        fontsize="medium",
    )
    return figure


def stage_trace_figure(study: Mapping[str, Any]) -> Any:
    """Trace of each stage's Hessian block against epoch, one panel per stage."""
    first = next(iter(study["variants"].values()))
    labels = [block["label"] for block in first["seeds"][0]["checkpoints"][0]["blocks"]]
    figure = _figure(4.0 * len(labels), 4.2)
    panels = figure.subplots(1, len(labels), squeeze=False)[0]
    for index, (axes, label) in enumerate(zip(panels, labels, strict=True)):

        def value(point: Mapping[str, Any], index: int = index) -> tuple:
            block = point["blocks"][index]
            return block["trace"], block["trace_stderr"]

        _lines(axes, study, value)
        axes.set_yscale("log")
        axes.set_title(label, fontsize="medium")
        axes.set_ylabel("trace of the block Hessian")
    panels[0].legend(fontsize="x-small")
    figure.suptitle(
        f"Stage-wise Hessian trace ± standard error\n{_subtitle(study)}",
        fontsize="medium",
    )
    return figure


def density_figure(study: Mapping[str, Any]) -> Any:
    """Spectral density at the density epochs, one panel per variant."""
    variants = list(study["variants"].values())
    figure = _figure(4.0 * len(variants), 4.0)
    panels = figure.subplots(1, len(variants), squeeze=False)[0]
    for axes, variant in zip(panels, variants, strict=True):
        floors = []
        for point in variant["seeds"][0]["checkpoints"]:
            density = point.get("density")
            if density is None:
                continue
            grid, values = _array(density["grid"]), _array(density["density"])
            # Below a tenth of one isolated eigenvalue's peak the curve is
            # the tail of the Gaussian kernel, not spectrum.
            single = 1.0 / (
                density["dimension"] * density["sigma"] * math.sqrt(2 * math.pi)
            )
            floor = DENSITY_FLOOR * single
            floors.append(floor)
            axes.semilogy(
                grid,
                np.maximum(values, floor),
                linewidth=1,
                label=f"epoch {point['epoch']}",
            )
        if floors:
            axes.set_ylim(bottom=min(floors))
        axes.set_title(f"{variant['label']}", fontsize="medium")
        axes.set_xlabel(r"eigenvalue $\lambda$")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="x-small")
    panels[0].set_ylabel("density (log scale)")
    figure.suptitle(
        f"Hessian spectral density (SLQ), first seed\n{_subtitle(study)}",
        fontsize="medium",
    )
    return figure


def landscape_figure(study: Mapping[str, Any]) -> Any:
    """Loss surface along the top two eigenvectors at the last checkpoint."""
    import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3d projection)

    variants = [
        variant
        for variant in study["variants"].values()
        if "landscape" in variant["seeds"][0]["checkpoints"][-1]
    ]
    figure = _figure(4.0 * max(1, len(variants)), 4.2)
    for index, variant in enumerate(variants, 1):
        point = variant["seeds"][0]["checkpoints"][-1]
        plane = point["landscape"]
        alphas, betas = _array(plane["alphas"]), _array(plane["betas"])
        losses = _array(plane["losses"])
        finite = np.isfinite(losses)
        losses = np.where(finite, losses, np.nanmax(losses[finite]))
        grid_alpha, grid_beta = np.meshgrid(alphas, betas, indexing="ij")
        axes = figure.add_subplot(1, len(variants), index, projection="3d")
        axes.plot_surface(grid_alpha, grid_beta, losses, cmap="viridis", linewidth=0)
        axes.set_xlabel(r"$\epsilon_1$ ($v_1$)", fontsize="small")
        axes.set_ylabel(r"$\epsilon_2$ ($v_2$)", fontsize="small")
        axes.set_zlabel("loss", fontsize="small")
        axes.tick_params(labelsize="x-small")
        axes.set_title(
            f"{variant['label']}\nepoch {point['epoch']}, "
            rf"$\lambda_1$ = {plane['eigenvalues'][0]:.3g}",
            fontsize="small",
        )
        axes.view_init(elev=30, azim=-60)
    figure.suptitle(
        "Loss landscape along the top two Hessian eigenvectors, first seed",
        fontsize="medium",
    )
    return figure


def draw_study(study: Mapping[str, Any], out: Path) -> dict[str, str]:
    """Draw every figure of the study into ``out``; return name to file name."""
    written = {}
    figures = {
        "trace": trace_figure,
        "top_eigenvalue": top_eigenvalue_figure,
        "stage_trace": stage_trace_figure,
        "density": density_figure,
        "landscape": landscape_figure,
    }
    for name, draw in figures.items():
        figure = draw(study)
        path = out / f"{name}.png"
        write_with(path, functools.partial(figure.savefig, format="png", dpi=DPI))
        written[name] = path.name
    return written
