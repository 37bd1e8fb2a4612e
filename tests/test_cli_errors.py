"""Bad input to ``hessop analyze``: one error line, non-zero exit, no traceback."""

import logging
import os
import subprocess
import sys

import pytest
import torch
from cli_runs import run_cli, write_cifar

from hessop.models import build_model

# Options that make a run that gets past its inputs finish in about a second.
QUICK = [
    "--epochs",
    "0",
    "--num-samples",
    "16",
    "--metrics",
    "trace",
    "--trace-matvecs",
    "2",
    "--no-plots",
    "--mpi",
    "off",
]


def fail(arguments, status=1):
    """Run the command, check that it fails with one line, return that line."""
    code, stdout, stderr = run_cli(arguments)
    assert code == status, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("hessop analyze: error: ")
    return lines[0]


def analyze(tmp_path, *options):
    return ["analyze", *QUICK, "--out", tmp_path / "out", *options]


def save_state(path, model):
    torch.save(model.state_dict(), path)
    return path


def resnet8(**options):
    return build_model("resnet8", num_classes=10, in_channels=1, seed=0, **options)


def test_missing_weights_file(tmp_path):
    path = tmp_path / "missing.pt"
    line = fail(analyze(tmp_path, "--weights", path))
    assert line.endswith(f"weights file not found: {path}")
    assert not (tmp_path / "out").exists()


def test_weights_path_is_a_directory(tmp_path):
    line = fail(analyze(tmp_path, "--weights", tmp_path))
    assert f"weights file {tmp_path} is a directory" in line


def test_weights_file_not_written_by_torch(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"these bytes are no torch.save file")
    line = fail(analyze(tmp_path, "--weights", path))
    assert f"cannot read weights file {path}" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without permission")
def test_weights_file_without_read_permission(tmp_path):
    path = save_state(tmp_path / "locked.pt", resnet8())
    path.chmod(0)
    line = fail(analyze(tmp_path, "--model", "resnet8", "--weights", path))
    assert "permission denied" in line


class Unsafe:
    """A class whose pickle would need code from this module to load."""


def test_weights_file_with_code_is_rejected(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"model": Unsafe()}, path)
    line = fail(analyze(tmp_path, "--weights", path))
    assert "refuses to run its code" in line
    assert "Unsafe" in line


def test_weights_file_without_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    line = fail(analyze(tmp_path, "--weights", path))
    assert "contains no state dict" in line


def test_weights_shape_mismatch_names_key(tmp_path):
    small = build_model("cnn", num_classes=10, in_channels=1, channels=(8, 16), seed=0)
    path = save_state(tmp_path / "cnn.pt", small)
    line = fail(analyze(tmp_path, "--model", "cnn", "--weights", path))
    assert (
        "'conv1.weight' has shape (8, 1, 3, 3) in the file but (16, 1, 3, 3) "
        "in the model" in line
    )


def test_weights_missing_key_names_key(tmp_path):
    path = save_state(tmp_path / "resnet8.pt", resnet8())
    line = fail(analyze(tmp_path, "--model", "resnet14", "--weights", path))
    assert "does not match --model resnet14" in line
    assert "'stage1.1.conv1.weight' (shape (16, 16, 3, 3)) is missing" in line


def test_weights_unexpected_key_names_key(tmp_path):
    state = resnet8().state_dict()
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pt"
    torch.save(state, path)
    line = fail(analyze(tmp_path, "--model", "resnet8", "--weights", path))
    assert "the file has 'extra.weight' (shape (3,))" in line


def test_dataset_directory_without_files(tmp_path):
    empty = tmp_path / "cifar"
    empty.mkdir()
    line = fail(analyze(tmp_path, "--data", "cifar10", "--data-dir", empty))
    assert "no CIFAR-10 binary files found" in line
    assert "data_batch_1.bin" in line
    assert "test_batch.bin" in line


def test_dataset_directory_missing_one_file(tmp_path):
    files = [f"data_batch_{i}.bin" for i in range(1, 6)]
    root = write_cifar(tmp_path / "cifar", files, 1, 10, records=2)
    line = fail(analyze(tmp_path, "--data", "cifar10", "--data-dir", root))
    assert "test_batch.bin not found" in line


def test_cifar_needs_data_dir(tmp_path):
    line = fail(analyze(tmp_path, "--data", "cifar100"))
    assert "--data cifar100 needs --data-dir DIR" in line
    assert "train.bin and test.bin" in line


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("resnet", "unknown model 'resnet'"),
        ("resnet21", "invalid CIFAR ResNet depth 21"),
        ("transformer", "known models: resnet20, resnet32"),
        ("no_such_module_here:build", "cannot import module 'no_such_module_here'"),
        ("math:no_such_function", "module 'math' has no callable 'no_such_function'"),
        ("math:pi", "module 'math' has no callable 'pi'"),
    ],
)
def test_unknown_model(tmp_path, model, message):
    line = fail(analyze(tmp_path, "--model", model))
    assert message in line
    assert not (tmp_path / "out").exists()


def test_factory_returning_no_module(tmp_path):
    line = fail(analyze(tmp_path, "--model", "builtins:dict"))
    assert "dict returned a dict, not a torch.nn.Module" in line


def test_switch_on_non_resnet(tmp_path):
    line = fail(analyze(tmp_path, "--model", "cnn", "--no-residual"))
    assert "--no-residual applies to the CIFAR ResNets" in line


def test_unknown_stage(tmp_path):
    line = fail(analyze(tmp_path, "--model", "resnet8", "--no-batch-norm", "stage4"))
    assert "got stage4" in line


def test_unknown_metric(tmp_path):
    code, stdout, stderr = run_cli(["analyze", "--metrics", "trace", "hessian"])
    assert code == 2
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1
    assert "argument --metrics: invalid choice: 'hessian'" in lines[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--top-k", "0"], "argument --top-k: must be a positive integer, got 0"),
        (["--eig-rtol", "nan"], "must be a finite positive number"),
        (["--num-samples", "many"], "not an integer: 'many'"),
        (["--top-k", "5", "--eig-max-matvecs", "10"], "at least 2 * --top-k + 1 = 11"),
        (["--landscape-grid", "1"], "--landscape-grid must be 0"),
        (["--trace-rtol", "0.1", "--trace-method", "xtrace"], "works only with"),
    ],
)
def test_invalid_option_values(options, message):
    code, _, stderr = run_cli(["analyze", *options])
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1
    assert message in stderr


def test_output_directory_under_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    arguments = ["analyze", *QUICK, "--out", blocker / "out"]
    line = fail(arguments)
    assert f"cannot create output directory {blocker / 'out'}" in line


def test_output_path_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = fail(["analyze", *QUICK, "--out", blocker])
    assert "a file with that name exists" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes without permission")
def test_output_directory_not_writable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    line = fail(["analyze", *QUICK, "--out", locked])
    assert "is not writable" in line


def test_non_finite_loss(tmp_path):
    model = resnet8()
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    path = save_state(tmp_path / "nan.pt", model)
    line = fail(analyze(tmp_path, "--model", "resnet8", "--weights", path))
    assert "the loss of the model on the data is not finite (nan)" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_unavailable(tmp_path):
    line = fail(analyze(tmp_path, "--device", "cuda"))
    assert "CUDA is not available" in line


def test_error_in_subprocess_and_debug_traceback(tmp_path):
    command = [sys.executable, "-m", "hessop", *map(str, analyze(tmp_path))]
    missing = str(tmp_path / "missing.pt")
    plain = subprocess.run(
        [*command, "--weights", missing], capture_output=True, text=True, check=False
    )
    assert plain.returncode == 1
    assert plain.stderr == f"hessop analyze: error: weights file not found: {missing}\n"

    debug = subprocess.run(
        [*command, "--weights", missing, "--debug"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last)")
    assert debug.stderr.strip().splitlines()[-1] == (
        f"hessop analyze: error: weights file not found: {missing}"
    )


def test_resume_with_changed_weights(tmp_path):
    path = save_state(tmp_path / "w.pt", resnet8())
    arguments = analyze(tmp_path, "--model", "resnet8", "--weights", path)
    code, _, stderr = run_cli(arguments)
    assert code == 0, stderr
    with torch.no_grad():
        model = resnet8()
        model.classifier.bias.add_(1.0)
    save_state(path, model)
    line = fail([*arguments, "--resume"])
    assert f"the weights file {path} changed" in line


def test_resume_from_foreign_report(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text('{"format": "something else"}')
    line = fail([*analyze(tmp_path), "--resume"])
    assert "is not a hessop analyze report" in line


def test_logging_restored_after_command(tmp_path):
    hessop_logger = logging.getLogger("hessop")
    handlers = list(hessop_logger.handlers)
    fail(analyze(tmp_path, "--weights", tmp_path / "missing.pt"))
    assert hessop_logger.handlers == handlers
    assert hessop_logger.propagate
    assert hessop_logger.level == logging.NOTSET
