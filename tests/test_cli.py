"""End-to-end runs of ``hessop analyze`` checked against the library."""

import json
import os
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import torch
from cli_runs import (
    PNG_SIGNATURE,
    SMALL_RUN,
    read_report,
    run_cli,
    strip_run_details,
    write_cifar,
)
from torch import nn

import hessop
from hessop.cli import _metrics
from hessop.datasets import load_dataset
from hessop.landscape import (
    filter_normalized_direction,
    loss_landscape_1d,
    loss_landscape_2d,
)
from hessop.models import build_model


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("analyze") / "out"
    status, stdout, stderr = run_cli([*SMALL_RUN, "--quiet", "--out", out])
    assert status == 0, stderr
    return out, read_report(out), stdout, stderr


@pytest.fixture(scope="module")
def library(small_run):
    """The model, data and full Hessian of the small run, rebuilt directly."""
    out = small_run[0]
    model = build_model("resnet8", num_classes=10, in_channels=1, seed=0)
    saved = torch.load(out / "model.pt", weights_only=True)
    model.load_state_dict(saved["state_dict"])
    model = model.double().eval()
    dataset, _ = load_dataset("digits", num_samples=96, seed=0)
    x, y = dataset.tensors
    x = x.double()
    batches = [(x[i : i + 40], y[i : i + 40]) for i in range(0, 96, 40)]
    H = hessop.HessianOperator(model, nn.CrossEntropyLoss(), batches)
    return model, batches, H


def rng(stream):
    return np.random.default_rng([0, stream])


def test_report_fields(small_run):
    out, report, _, _ = small_run
    assert report["format"] == "hessop-analyze-report"
    assert report["status"] == "complete"
    assert report["seed"] == 0
    assert report["settings"]["trace_matvecs"] == 12
    assert report["settings"]["num_samples"] == 96
    assert set(report["versions"]) >= {"hessop", "python", "torch", "numpy", "scipy"}
    assert report["versions"]["torch"] == torch.__version__
    assert report["environment"] == {
        "device": "cpu",
        "dtype": "float64",
        "torch_threads": torch.get_num_threads(),
        "mpi_ranks": 1,
    }
    assert report["data"]["name"] == "digits"
    assert report["data"]["num_samples"] == 96
    assert report["model"]["num_parameters"] == 75002
    assert report["model"]["training"]["settings"]["epochs"] == 1
    assert report["timings"]["total_seconds"] > 0
    assert set(report["timings"]["metrics_seconds"]) == set(_metrics.METRICS)
    for name in _metrics.METRICS:
        assert report["metrics"][name]["status"] == "complete", name
        assert report["metrics"][name]["seconds"] > 0, name
    assert report["runs"][0]["metrics_computed"] == list(_metrics.METRICS)
    assert not [path for path in out.iterdir() if path.name.endswith(".tmp")]


def test_report_matvec_counts(small_run):
    _, report, _, _ = small_run
    metrics = report["metrics"]
    assert metrics["trace"]["num_matvecs"] == 12
    assert metrics["density"]["num_matvecs"] == 15
    assert metrics["eigenvalues"]["num_matvecs"] <= 40
    blocks = metrics["blocks"]
    per_block = [
        b["eigen"]["num_matvecs"] + b["trace_details"]["num_matvecs"]
        for b in blocks["blocks"]
    ]
    assert blocks["num_matvecs"] == sum(per_block)
    expected = sum(metrics[name]["num_matvecs"] for name in ("eigenvalues", "trace"))
    expected += metrics["density"]["num_matvecs"] + blocks["num_matvecs"]
    assert report["num_matvecs"] == expected
    run = report["runs"][0]
    assert run["operator_matvecs"] == expected - blocks["num_matvecs"]


def test_loss_matches_library(small_run, library):
    _, report, _, _ = small_run
    model, batches, _ = library
    with torch.no_grad():
        losses = [
            nn.functional.cross_entropy(model(x), y, reduction="sum")
            for x, y in batches
        ]
    assert report["loss"]["value"] == pytest.approx(float(sum(losses)) / 96, rel=1e-12)


def test_eigenvalues_match_library(small_run, library):
    out, report, _, _ = small_run
    _, _, H = library
    record = report["metrics"]["eigenvalues"]
    result = hessop.eigenvalues(
        H, 2, which="LA", rtol=1e-3, max_matvecs=40, seed=rng(1)
    )
    np.testing.assert_allclose(record["eigenvalues"], result.eigenvalues, rtol=1e-9)
    assert record["converged"] == result.converged.tolist()
    assert record["num_matvecs"] == result.num_matvecs
    assert record["rtol"] == 1e-3
    assert record["eigenvalues"][0] >= record["eigenvalues"][1]

    stored = np.load(out / "eigenvectors.npz")
    assert list(stored["parameter_names"]) == H.layout.names
    np.testing.assert_allclose(stored["eigenvalues"], result.eigenvalues, rtol=1e-9)
    overlap = np.abs(np.sum(stored["eigenvectors"] * result.eigenvectors, axis=0))
    np.testing.assert_allclose(overlap, 1.0, rtol=1e-6)


def test_trace_matches_library(small_run, library):
    _, report, _, _ = small_run
    _, _, H = library
    record = report["metrics"]["trace"]
    result = hessop.trace(H, method="hutchinson", num_matvecs=12, seed=rng(2))
    assert record["estimate"] == pytest.approx(result.estimate, rel=1e-9)
    assert record["stderr"] == pytest.approx(result.stderr, rel=1e-9)
    assert record["stderr"] > 0
    assert record["distribution"] == "rademacher"
    assert len(record["samples"]) == 12


def test_density_matches_library(small_run, library):
    _, report, _, _ = small_run
    _, _, H = library
    record = report["metrics"]["density"]
    result = hessop.slq(H, num_steps=15, num_probes=1, seed=rng(3))
    np.testing.assert_allclose(
        record["nodes"][0], result.nodes[0], rtol=1e-8, atol=1e-10
    )
    assert record["sigma"] == pytest.approx(result.default_sigma(), rel=1e-8)
    assert record["sigma_rule"] == "1% of the node range"
    assert record["integral"] == pytest.approx(1.0, abs=1e-4)
    assert len(record["grid"]) == len(record["density"])


def test_blocks_match_library(small_run, library):
    _, report, _, _ = small_run
    model, batches, _ = library
    blocks = report["metrics"]["blocks"]["blocks"]
    assert [b["label"] for b in blocks] == ["stage1", "stage2", "stage3"]
    for index, block in enumerate(blocks):
        H = hessop.HessianOperator(
            model, nn.CrossEntropyLoss(), batches, params=block["parameters"]
        )
        generator = rng(_metrics.BLOCK_STREAM + index)
        top = hessop.eigenvalues(H, 1, rtol=1e-3, max_matvecs=10, seed=generator)
        trace = hessop.trace(H, num_matvecs=6, seed=generator)
        assert block["top_eigenvalue"] == pytest.approx(top.eigenvalues[0], rel=1e-9)
        assert block["trace"] == pytest.approx(trace.estimate, rel=1e-9)
        assert block["trace_stderr"] == pytest.approx(trace.stderr, rel=1e-9)
        assert block["num_parameters"] == H.shape[0]
        assert all(
            name.startswith(block["label"] + ".") for name in block["parameters"]
        )


def test_landscape_matches_library(small_run, library):
    out, report, _, _ = small_run
    model, batches, H = library
    record = report["metrics"]["landscape"]
    parts = record["parts"]
    assert set(parts) == {"eigen_1d", "eigen_2d", "random_1d", "random_2d"}
    assert parts["eigen_1d"]["center_loss"] == pytest.approx(
        report["loss"]["value"], rel=1e-12
    )

    vectors = np.load(out / "eigenvectors.npz")["eigenvectors"]
    eigen = [H.unflatten(torch.from_numpy(vectors[:, j].copy())) for j in range(2)]
    alphas = np.linspace(-0.5, 0.5, 5)
    line = loss_landscape_1d(model, nn.CrossEntropyLoss(), batches, eigen[0], alphas)
    np.testing.assert_allclose(parts["eigen_1d"]["losses"], line.losses, rtol=1e-10)
    np.testing.assert_allclose(parts["eigen_1d"]["alphas"], alphas)

    random = [
        filter_normalized_direction(model, seed=seed)
        for seed in record["random"]["seeds"]
    ]
    axis = np.linspace(-1.0, 1.0, 3)
    plane = loss_landscape_2d(model, nn.CrossEntropyLoss(), batches, random, axis, axis)
    np.testing.assert_allclose(parts["random_2d"]["losses"], plane.losses, rtol=1e-10)
    assert record["num_evaluations"] == 2 * (5 + 1) + 2 * (9 + 1)
    assert record["eigen"]["eigenvalues_used"] == pytest.approx(
        report["metrics"]["eigenvalues"]["eigenvalues"], rel=1e-12
    )


def test_plots_are_valid_png(small_run):
    out, report, _, _ = small_run
    expected = {
        "density",
        "blocks",
        "landscape_1d",
        "landscape_2d_eigen_contour",
        "landscape_2d_eigen_surface",
        "landscape_2d_random_contour",
        "landscape_2d_random_surface",
    }
    assert set(report["plots"]) == expected
    for name, file_name in report["plots"].items():
        path = out / file_name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        image = matplotlib.image.imread(path)
        assert image.ndim == 3, name
        assert image.shape[0] > 300, name
        assert image.shape[1] > 300, name


def test_summary_table_on_stdout(small_run):
    _, report, stdout, stderr = small_run
    assert "ResNet-8 on digits train split, 96 samples" in stdout
    assert "top eigenvalue λ1" in stdout
    assert f"{report['metrics']['trace']['estimate']:.6g}" in stdout
    assert "block stage2: trace" in stdout
    assert "report: " in stdout
    assert stderr == ""


def test_interrupted_run_resumes_to_same_report(small_run, tmp_path, monkeypatch):
    _, reference, _, _ = small_run
    out = tmp_path / "out"

    def interrupt(context, previous):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(_metrics, "compute_trace", interrupt)
        status, _, stderr = run_cli([*SMALL_RUN, "--quiet", "--out", out])
    assert status == 130
    assert "interrupted" in stderr
    partial = read_report(out)
    assert partial["status"] == "interrupted"
    assert partial["metrics"]["eigenvalues"]["status"] == "complete"
    assert "trace" not in partial["metrics"]

    status, _, stderr = run_cli([*SMALL_RUN, "--quiet", "--resume", "--out", out])
    assert status == 0, stderr
    resumed = read_report(out)
    assert resumed["runs"][1]["metrics_computed"] == [
        "trace",
        "density",
        "blocks",
        "landscape",
    ]
    assert strip_run_details(resumed) == strip_run_details(reference)


def test_resume_of_complete_run_computes_nothing(small_run, tmp_path):
    out, reference, _, _ = small_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    status, _, stderr = run_cli([*SMALL_RUN, "--resume", "--out", copy])
    assert status == 0, stderr
    resumed = read_report(copy)
    assert resumed["runs"][-1]["metrics_computed"] == []
    assert "operator_matvecs" not in resumed["runs"][-1]
    assert strip_run_details(resumed) == strip_run_details(reference)
    assert "kept from the earlier run" in stderr


def test_cache_budget_gives_same_numbers(small_run, tmp_path, monkeypatch):
    # Three batches of 40, 40 and 16 samples: 'unlimited' keeps all three
    # first-order graphs, which changes the cost of a product, not its value.
    _, reference, _, _ = small_run
    complete = []

    class Recorded(hessop.HessianOperator):
        def _matmat(self, X):
            result = super()._matmat(X)
            complete.append(self._graph_cache.complete)
            return result

    monkeypatch.setattr(_metrics.hessop, "HessianOperator", Recorded)
    out = tmp_path / "cached"
    arguments = [*SMALL_RUN, "--metrics", "eigenvalues", "trace"]
    arguments += ["--cache-budget", "unlimited", "--quiet", "--out", out]
    status, _, stderr = run_cli(arguments)
    assert status == 0, stderr
    cached = read_report(out)
    for key in ("num_matvecs", "converged"):
        expected = reference["metrics"]["eigenvalues"][key]
        assert cached["metrics"]["eigenvalues"][key] == expected
    np.testing.assert_allclose(
        cached["metrics"]["eigenvalues"]["eigenvalues"],
        reference["metrics"]["eigenvalues"]["eigenvalues"],
        rtol=1e-10,  # float64; kept graphs give the same products
    )
    assert cached["metrics"]["trace"]["estimate"] == pytest.approx(
        reference["metrics"]["trace"]["estimate"], rel=1e-10
    )
    assert "cache_budget" not in cached["settings"]
    assert complete
    assert all(complete)


def test_resume_with_other_settings_fails(small_run, tmp_path):
    out, _, _, _ = small_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    arguments = [*SMALL_RUN, "--resume", "--out", copy]
    arguments[arguments.index("--trace-matvecs") + 1] = "13"
    status, _, stderr = run_cli(arguments)
    assert status == 1
    assert "--trace-matvecs 12, this run has 13" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_landscape_resumes_missing_parts(small_run, tmp_path):
    out, reference, _, _ = small_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    report = read_report(copy)
    landscape = report["metrics"]["landscape"]
    landscape["status"] = "partial"
    del landscape["parts"]["random_2d"]
    (copy / "report.json").write_text(json.dumps(report))

    status, _, stderr = run_cli([*SMALL_RUN, "--quiet", "--resume", "--out", copy])
    assert status == 0, stderr
    resumed = read_report(copy)
    assert resumed["runs"][-1]["metrics_computed"] == ["landscape"]
    assert strip_run_details(resumed) == strip_run_details(reference)


def test_blocks_resume_missing_block(small_run, tmp_path):
    out, reference, _, _ = small_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    report = read_report(copy)
    blocks = report["metrics"]["blocks"]
    blocks["status"] = "partial"
    del blocks["blocks"][-1]
    (copy / "report.json").write_text(json.dumps(report))

    status, _, stderr = run_cli([*SMALL_RUN, "--resume", "--out", copy])
    assert status == 0, stderr
    assert "block stage1: kept from the earlier run" in stderr
    assert "block stage3: kept" not in stderr
    resumed = read_report(copy)
    assert resumed["runs"][-1]["metrics_computed"] == ["blocks"]
    assert strip_run_details(resumed) == strip_run_details(reference)


def write_cifar10(directory):
    files = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    return write_cifar(directory, files, label_bytes=1, num_classes=10, records=6)


def test_cifar10_binary_files(tmp_path):
    root = write_cifar10(tmp_path / "cifar-10-batches-bin")
    out = tmp_path / "out"
    status, _, stderr = run_cli(
        [
            "analyze",
            "--data",
            "cifar10",
            "--data-dir",
            tmp_path,
            "--model",
            "resnet8",
            "--epochs",
            "1",
            "--num-samples",
            "all",
            "--metrics",
            "eigenvalues",
            "trace",
            "--top-k",
            "1",
            "--eig-max-matvecs",
            "30",
            "--trace-matvecs",
            "4",
            "--no-plots",
            "--mpi",
            "off",
            "--out",
            out,
        ]
    )
    assert status == 0, stderr
    report = read_report(out)
    assert report["data"]["name"] == "cifar10"
    assert report["data"]["num_samples"] == 30
    assert report["data"]["channels"] == 3
    assert report["data"]["image_size"] == [32, 32]
    assert report["data"]["source"] == str(root)
    assert report["model"]["training"]["history"]["test_accuracy"]
    assert np.isfinite(report["metrics"]["eigenvalues"]["eigenvalues"][0])
    assert report["plots"] == {}
    # stderr is not a terminal here, so no progress bar may be drawn.
    assert "\r" not in stderr
    assert "epoch 1/1" in stderr


def test_cifar100_binary_files(tmp_path):
    write_cifar(tmp_path, ["train.bin", "test.bin"], 2, 20, records=8, seed=1)
    out = tmp_path / "out"
    status, _, stderr = run_cli(
        [
            "analyze",
            "--data",
            "cifar100",
            "--data-dir",
            tmp_path,
            "--model",
            "cnn",
            "--epochs",
            "0",
            "--num-samples",
            "5",
            "--metrics",
            "trace",
            "--trace-matvecs",
            "3",
            "--quiet",
            "--no-plots",
            "--mpi",
            "off",
            "--out",
            out,
        ]
    )
    assert status == 0, stderr
    report = read_report(out)
    assert report["data"]["num_classes"] == 100
    assert report["data"]["num_samples"] == 5
    assert report["model"]["weights"] == {"initialisation_seed": 0}


def test_python_m_and_console_script():
    module = subprocess.run(
        [sys.executable, "-m", "hessop", "analyze", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert module.returncode == 0, module.stderr
    assert "--eig-max-matvecs" in module.stdout
    assert "(default: 50)" in module.stdout
    script = shutil.which("hessop", path=os.path.dirname(sys.executable))
    assert script is not None
    version = subprocess.run(
        [script, "--version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0
    assert version.stdout.strip() == f"hessop {hessop.__version__}"


FACTORY_MODULE = """
import torch
from torch import nn


def make(num_classes, in_channels, hidden=12):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * 64, hidden),
        nn.Tanh(),
        nn.Linear(hidden, num_classes),
    )
"""


def test_user_model_with_weights_file(tmp_path):
    (tmp_path / "netdef.py").write_text(FACTORY_MODULE)
    namespace = {}
    exec(FACTORY_MODULE, namespace)
    model = namespace["make"](10, 1, hidden=7)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(0.5)
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "out"

    status, _, stderr = run_cli(
        [
            "analyze",
            "--model",
            f"{tmp_path / 'netdef.py'}:make",
            "--model-option",
            "hidden=7",
            "--weights",
            weights,
            "--num-samples",
            "50",
            "--dtype",
            "float64",
            "--metrics",
            "eigenvalues",
            "blocks",
            "--eig-max-matvecs",
            "30",
            "--block-trace-matvecs",
            "3",
            "--quiet",
            "--no-plots",
            "--mpi",
            "off",
            "--out",
            out,
        ]
    )
    assert status == 0, stderr
    report = read_report(out)
    assert report["model"]["options"] == {"hidden": 7}
    assert report["model"]["num_parameters"] == 64 * 7 + 7 + 7 * 10 + 10
    assert report["model"]["weights"]["file"] == str(weights)
    assert report["description"]["checkpoint"] == "weights: weights.pt"
    assert [b["label"] for b in report["metrics"]["blocks"]["blocks"]] == ["1", "3"]

    dataset, _ = load_dataset("digits", num_samples=50, seed=0)
    x, y = dataset.tensors
    H = hessop.HessianOperator(model.double(), nn.CrossEntropyLoss(), (x.double(), y))
    expected = hessop.eigenvalues(
        H, 2, rtol=1e-3, max_matvecs=30, seed=rng(1)
    ).eigenvalues
    np.testing.assert_allclose(
        report["metrics"]["eigenvalues"]["eigenvalues"], expected, rtol=1e-9
    )
