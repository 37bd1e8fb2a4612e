"""``hessop study`` end to end on a tiny configuration, and its resumption."""

import json

import pytest
from cli_runs import PNG_SIGNATURE, read_report, run_cli

from hessop.cli import _analyze

# Two variants of ResNet-8, two epochs on 200 digits, a checkpoint after each
# epoch, Hessian metrics on 64 samples with budgets of a few matvecs.
TINY_STUDY = [
    "study",
    "--model",
    "resnet8",
    "--variants",
    "baseline",
    "no-bn",
    "--epochs",
    "2",
    "--checkpoint-every",
    "1",
    "--train-samples",
    "200",
    "--num-samples",
    "64",
    "--eig-max-matvecs",
    "10",
    "--trace-matvecs",
    "4",
    "--block-eig-max-matvecs",
    "4",
    "--block-trace-matvecs",
    "3",
    "--density-steps",
    "8",
    "--landscape-points",
    "3",
    "--landscape-grid",
    "3",
    "--mpi",
    "off",
    "--quiet",
]
VARIANTS = ("baseline", "no-bn")
FIGURES = ("trace", "top_eigenvalue", "stage_trace", "density", "landscape")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    status, stdout, stderr = run_cli([*TINY_STUDY, "--out", out])
    assert status == 0, stderr
    return out, stdout


def read_json(path):
    return json.loads(path.read_text())


def test_study_writes_files(study):
    out, stdout = study
    for name in ("study.json", "accuracy.json", "accuracy.md", "hessian.md"):
        assert (out / name).is_file(), name
    for name in FIGURES:
        assert (out / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE), name
    for variant in VARIANTS:
        run = out / variant / "seed-0"
        assert (run / "training" / "checkpoint-epoch-0002.pt").is_file()
        for epoch in ("epoch-0001", "epoch-0002"):
            assert read_report(run / epoch)["status"] == "complete"
    assert "| ResNet-8 (no BN) | 0.01 |" in stdout


def test_metrics_per_checkpoint(study):
    out, _ = study
    report = read_report(out / "baseline" / "seed-0" / "epoch-0002")
    metrics = report["metrics"]
    # Density at the first and last checkpoint, landscape at the last.
    assert set(metrics) == {"eigenvalues", "trace", "density", "blocks", "landscape"}
    assert report["settings"]["num_samples"] == 64
    assert report["settings"]["weights"].endswith("checkpoint-epoch-0002.pt")
    assert list(metrics["landscape"]["parts"]) == ["eigen_1d", "eigen_2d"]
    first = read_report(out / "baseline" / "seed-0" / "epoch-0001")
    assert "landscape" not in first["metrics"]


def test_accuracy_table_matches_training_logs(study):
    out, _ = study
    rows = {row["variant"]: row for row in read_json(out / "accuracy.json")["variants"]}
    markdown = (out / "accuracy.md").read_text()
    assert set(rows) == set(VARIANTS)
    for variant in VARIANTS:
        training = read_json(out / variant / "seed-0" / "training" / "training.json")
        history = training["history"]
        row = rows[variant]
        assert row["test_accuracy"] == history["test_accuracy"][-1]
        assert row["train_accuracy"] == history["train_accuracy"][-1]
        assert row["epochs"] == 2
        assert f"{100 * history['test_accuracy'][-1]:.2f}" in markdown
    assert rows["baseline"]["lr"] == 0.1
    assert rows["no-bn"]["lr"] == 0.01


def test_trace_matches_reports(study):
    out, _ = study
    record = read_json(out / "study.json")
    assert record["checkpoint_epochs"] == [1, 2]
    for variant in VARIANTS:
        points = record["variants"][variant]["seeds"][0]["checkpoints"]
        for point in points:
            report = read_report(
                out / variant / "seed-0" / f"epoch-{point['epoch']:04d}"
            )
            assert point["trace"] == report["metrics"]["trace"]["estimate"]
            assert point["trace_stderr"] == report["metrics"]["trace"]["stderr"]
            assert [b["label"] for b in point["blocks"]] == [
                "stage1",
                "stage2",
                "stage3",
            ]
        row = next(
            row
            for row in read_json(out / "accuracy.json")["variants"]
            if row["variant"] == variant
        )
        assert row["final_trace"] == points[-1]["trace"]
        assert row["final_trace_stderr"] == points[-1]["trace_stderr"]


def test_rerun_recomputes_nothing(study, monkeypatch):
    out, _ = study
    before = read_json(out / "accuracy.json")

    def fail(*args, **kwargs):
        raise AssertionError("a finished step was computed again")

    monkeypatch.setattr("hessop.cli._train.train", fail)
    monkeypatch.setattr(_analyze._Run, "execute", fail)
    status, _, stderr = run_cli([*TINY_STUDY, "--out", out])
    assert status == 0, stderr
    assert read_json(out / "accuracy.json") == before


def test_rerun_completes_missing_checkpoint(study, monkeypatch):
    out, _ = study
    before = read_json(out / "accuracy.json")
    (out / "no-bn" / "seed-0" / "epoch-0001" / "report.json").unlink()
    calls = []
    execute = _analyze._Run.execute

    def counted(self):
        calls.append(self.args.out)
        return execute(self)

    monkeypatch.setattr(_analyze._Run, "execute", counted)
    status, _, stderr = run_cli([*TINY_STUDY, "--out", out])
    assert status == 0, stderr
    assert calls == [str(out / "no-bn" / "seed-0" / "epoch-0001")]
    # The same seed and probes give the same numbers again.
    assert read_json(out / "accuracy.json") == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--variants", "no-bn-stage4"], "unknown variant"),
        (["--variants", "baseline", "baseline"], "twice"),
        (["--density-epochs", "3"], "not checkpoint epochs"),
        (["--model", "mlp"], "CIFAR ResNet"),
    ],
)
def test_invalid_options_rejected(arguments, message, tmp_path):
    status, _, stderr = run_cli(["study", *arguments, "--out", tmp_path])
    assert status == 2
    assert message in stderr


def test_help_states_budget():
    status, stdout, _ = run_cli(["study", "--help"])
    assert status == 0
    assert "152 matvecs" in stdout
    assert "--no-bn-lr" in stdout
