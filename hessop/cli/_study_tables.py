"""Tables of ``hessop study``: final accuracy per variant and metrics per epoch.

With one seed, the error of a trace is the Hutchinson standard error of that
estimate (the spread of the probes, for fixed weights). With several seeds,
every error is the standard error of the mean over the seeds,
``std(ddof=1) / sqrt(seeds)``, which contains both the training-run spread
and the probe noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hessop.cli._report import atomic_file, write_json

ACCURACY_JSON = "accuracy.json"
ACCURACY_MARKDOWN = "accuracy.md"
HESSIAN_MARKDOWN = "hessian.md"


def checkpoint_summary(
    report: Mapping[str, Any], epoch: int, directory: str
) -> dict[str, Any]:
    """Extract the numbers that the study plots from one analysis report."""
    metrics = report["metrics"]
    eigen = metrics["eigenvalues"]
    trace = metrics["trace"]
    summary: dict[str, Any] = {
        "epoch": epoch,
        "report": f"{directory}/report.json",
        "loss": report["loss"]["value"],
        "accuracy": report["loss"]["accuracy"],
        "eigenvalues": eigen["eigenvalues"],
        "eigenvalues_converged": eigen["converged"],
        "trace": trace["estimate"],
        "trace_stderr": trace["stderr"],
        "blocks": [
            {
                "label": block["label"],
                "num_parameters": block["num_parameters"],
                "top_eigenvalue": block["top_eigenvalue"],
                "trace": block["trace"],
                "trace_stderr": block["trace_stderr"],
            }
            for block in metrics["blocks"]["blocks"]
        ],
        "num_matvecs": report.get("num_matvecs"),
        "seconds": report.get("timings", {}).get("total_seconds"),
    }
    density = metrics.get("density")
    if density is not None and density.get("status") == "complete":
        summary["density"] = {
            key: density[key] for key in ("grid", "density", "sigma", "dimension")
        }
    landscape = metrics.get("landscape")
    if landscape is not None and landscape.get("status") == "complete":
        plane = landscape["parts"].get("eigen_2d")
        if plane is not None:
            summary["landscape"] = {
                "alphas": plane["alphas"],
                "betas": plane["betas"],
                "losses": plane["losses"],
                "eigenvalues": landscape["eigen"]["eigenvalues_used"],
            }
    return summary


def combine(values: Sequence[float], errors: Sequence[float | None]) -> tuple:
    """Return the mean over seeds and its standard error.

    One value keeps its own error (None when it has none). Several values get
    the standard error of their mean.
    """
    if len(values) == 1:
        return float(values[0]), errors[0]
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1) / math.sqrt(len(array)))


def variant_rows(study: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return one row per variant: final accuracies, trace and top eigenvalue."""
    rows = []
    for name, variant in study["variants"].items():
        seeds = variant["seeds"]
        histories = [seed["training"]["history"] for seed in seeds]
        finals = [seed["checkpoints"][-1] for seed in seeds]
        test = combine([h["test_accuracy"][-1] for h in histories], [None])
        train = combine([h["train_accuracy"][-1] for h in histories], [None])
        trace = combine(
            [final["trace"] for final in finals],
            [final["trace_stderr"] for final in finals],
        )
        top = combine([final["eigenvalues"][0] for final in finals], [None])
        stages = []
        for index, block in enumerate(finals[0]["blocks"]):
            mean, error = combine(
                [final["blocks"][index]["trace"] for final in finals],
                [final["blocks"][index]["trace_stderr"] for final in finals],
            )
            stages.append({"label": block["label"], "trace": mean, "stderr": error})
        rows.append(
            {
                "variant": name,
                "label": variant["label"],
                "lr": variant["lr"],
                "num_parameters": variant["num_parameters"],
                "seeds": [seed["seed"] for seed in seeds],
                "epochs": histories[0]["epoch"][-1],
                "train_accuracy": train[0],
                "train_accuracy_stderr": train[1],
                "test_accuracy": test[0],
                "test_accuracy_stderr": test[1],
                "final_trace": trace[0],
                "final_trace_stderr": trace[1],
                "final_top_eigenvalue": top[0],
                "final_top_eigenvalue_stderr": top[1],
                "final_stage_traces": stages,
            }
        )
    return rows


def _with_error(value: float, error: float | None, digits: int = 4) -> str:
    if error is None:
        return f"{value:.{digits}g}"
    return f"{value:.{digits}g} ± {error:.2g}"


def _percent(value: float, error: float | None) -> str:
    if error is None:
        return f"{100 * value:.2f}"
    return f"{100 * value:.2f} ± {100 * error:.2f}"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def accuracy_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Return the final-accuracy table (the paper's Tables I-III) as markdown."""
    header = [
        "variant",
        "lr",
        "train acc. (%)",
        "test acc. (%)",
        "final trace",
        "final top eigenvalue",
        *[f"{stage['label']} trace" for stage in rows[0]["final_stage_traces"]],
    ]
    lines = [
        [
            row["label"],
            f"{row['lr']:g}",
            _percent(row["train_accuracy"], row["train_accuracy_stderr"]),
            _percent(row["test_accuracy"], row["test_accuracy_stderr"]),
            _with_error(row["final_trace"], row["final_trace_stderr"]),
            _with_error(
                row["final_top_eigenvalue"], row["final_top_eigenvalue_stderr"]
            ),
            *[_with_error(s["trace"], s["stderr"]) for s in row["final_stage_traces"]],
        ]
        for row in rows
    ]
    return _markdown(header, lines)


def hessian_markdown(study: Mapping[str, Any]) -> str:
    """Return the metrics at every checkpoint, one markdown table per variant."""
    sections = []
    for variant in study["variants"].values():
        for seed in variant["seeds"]:
            history = seed["training"]["history"]
            test = dict(zip(history["epoch"], history["test_accuracy"], strict=True))
            checkpoints = seed["checkpoints"]
            labels = [block["label"] for block in checkpoints[0]["blocks"]]
            header = [
                "epoch",
                "test acc. (%)",
                "train loss",
                "λ1",
                "λ2",
                "trace",
                *[f"{label} trace" for label in labels],
                *[f"{label} λ1" for label in labels],
            ]
            lines = [
                [
                    str(point["epoch"]),
                    f"{100 * test[point['epoch']]:.2f}",
                    f"{point['loss']:.4g}",
                    *[f"{value:.4g}" for value in point["eigenvalues"][:2]],
                    _with_error(point["trace"], point["trace_stderr"]),
                    *[
                        _with_error(b["trace"], b["trace_stderr"])
                        for b in point["blocks"]
                    ],
                    *[f"{b['top_eigenvalue']:.4g}" for b in point["blocks"]],
                ]
                for point in checkpoints
            ]
            title = f"### {variant['label']}, seed {seed['seed']}, lr {variant['lr']:g}"
            sections.append(f"{title}\n\n{_markdown(header, lines)}")
    return "\n\n".join(sections)


def write_tables(study: Mapping[str, Any], out: Path) -> str:
    """Write accuracy.json, accuracy.md and hessian.md; return the markdown."""
    rows = variant_rows(study)
    error_note = (
        "errors: Hutchinson standard error (one seed)"
        if len(rows[0]["seeds"]) == 1
        else f"errors: standard error of the mean over {len(rows[0]['seeds'])} seeds"
    )
    write_json(out / ACCURACY_JSON, {"errors": error_note, "variants": rows})
    accuracy = f"{accuracy_markdown(rows)}\n\n{error_note}\n"
    with atomic_file(out / ACCURACY_MARKDOWN, "w") as file:
        file.write(accuracy)
    hessian = hessian_markdown(study) + "\n"
    with atomic_file(out / HESSIAN_MARKDOWN, "w") as file:
        file.write(hessian)
    return accuracy
