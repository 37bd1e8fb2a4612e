"""Dataset loaders: digits, CIFAR binary files written here, synthetic data."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from hessop.datasets import (
    DATASET_NAMES,
    DIGITS_TEST_FRACTION,
    DatasetInfo,
    load_dataset,
)

PIXELS = 3 * 32 * 32


# CIFAR files in the real binary format


def write_cifar_file(path, labels, images):
    """Write records of label bytes followed by 3072 channel-major pixel bytes."""
    labels = np.asarray(labels, dtype=np.uint8).reshape(len(images), -1)
    pixels = np.asarray(images, dtype=np.uint8).reshape(len(images), PIXELS)
    path.write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())


def random_images(rng, count):
    return rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)


@pytest.fixture
def cifar10_dir(tmp_path):
    """Five training files of 3 records each and a test file of 4 records."""
    rng = np.random.default_rng(0)
    data = {"train_labels": [], "train_images": []}
    for index in range(1, 6):
        labels = rng.integers(0, 10, size=3)
        images = random_images(rng, 3)
        write_cifar_file(tmp_path / f"data_batch_{index}.bin", labels, images)
        data["train_labels"].append(labels)
        data["train_images"].append(images)
    data["train_labels"] = np.concatenate(data["train_labels"])
    data["train_images"] = np.concatenate(data["train_images"])
    data["test_labels"] = rng.integers(0, 10, size=4)
    data["test_images"] = random_images(rng, 4)
    write_cifar_file(
        tmp_path / "test_batch.bin", data["test_labels"], data["test_images"]
    )
    data["root"] = tmp_path
    return data


@pytest.fixture
def cifar100_dir(tmp_path):
    rng = np.random.default_rng(1)
    data = {}
    for split, count in (("train", 6), ("test", 3)):
        coarse = rng.integers(0, 20, size=count)
        fine = rng.integers(0, 100, size=count)
        images = random_images(rng, count)
        labels = np.stack([coarse, fine], axis=1)
        write_cifar_file(tmp_path / f"{split}.bin", labels, images)
        data[split] = (coarse, fine, images)
    data["root"] = tmp_path
    return data


def raw_pixels(dataset, info):
    """Undo the standardisation and return the uint8 pixel values."""
    mean = torch.tensor(info.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(info.std).reshape(1, -1, 1, 1)
    images = dataset.tensors[0].double() * std.double() + mean.double()
    return torch.round(images * 255).to(torch.uint8).numpy()


def test_cifar10_train_split(cifar10_dir):
    dataset, info = load_dataset("cifar10", root=cifar10_dir["root"])
    images, labels = dataset.tensors
    assert images.shape == (15, 3, 32, 32)
    assert images.dtype == torch.float32
    assert labels.dtype == torch.int64
    np.testing.assert_array_equal(labels.numpy(), cifar10_dir["train_labels"])
    np.testing.assert_array_equal(
        raw_pixels(dataset, info), cifar10_dir["train_images"]
    )
    assert info.num_classes == 10
    assert info.input_shape == (3, 32, 32)
    assert info.num_samples == 15


def test_cifar10_channel_major_layout(tmp_path):
    # One record whose red plane is 10, green 20 and blue a row index.
    image = np.zeros((3, 32, 32), dtype=np.uint8)
    image[0] = 10
    image[1] = 20
    image[2] = np.arange(32, dtype=np.uint8)[:, None]
    record = bytes([7]) + image[0].tobytes() + image[1].tobytes() + image[2].tobytes()
    (tmp_path / "test_batch.bin").write_bytes(record)
    # Random training images, so that no channel is constant.
    train_images = random_images(np.random.default_rng(4), 5)
    for index in range(1, 6):
        path = tmp_path / f"data_batch_{index}.bin"
        write_cifar_file(path, [0], train_images[index - 1 : index])

    dataset, info = load_dataset("cifar10", root=tmp_path, split="test")
    pixels = raw_pixels(dataset, info)[0]
    assert dataset.tensors[1].tolist() == [7]
    assert (pixels[0] == 10).all()
    assert (pixels[1] == 20).all()
    assert (pixels[2][:, 0] == np.arange(32)).all()
    assert (pixels[2][5] == 5).all()


def test_cifar10_test_split_uses_train_statistics(cifar10_dir):
    _, train_info = load_dataset("cifar10", root=cifar10_dir["root"])
    test, test_info = load_dataset("cifar10", root=cifar10_dir["root"], split="test")
    assert test_info.mean == train_info.mean
    assert test_info.std == train_info.std
    np.testing.assert_array_equal(test.tensors[1].numpy(), cifar10_dir["test_labels"])
    np.testing.assert_array_equal(
        raw_pixels(test, test_info), cifar10_dir["test_images"]
    )

    scaled = cifar10_dir["train_images"].astype(np.float64) / 255
    np.testing.assert_allclose(train_info.mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(train_info.std, scaled.std(axis=(0, 2, 3)), rtol=1e-12)


def test_cifar10_train_images_standardised(cifar10_dir):
    dataset, _ = load_dataset("cifar10", root=cifar10_dir["root"])
    images = dataset.tensors[0].double()
    np.testing.assert_allclose(images.mean(dim=(0, 2, 3)), 0.0, atol=1e-6)
    np.testing.assert_allclose(images.std(dim=(0, 2, 3), correction=0), 1.0, atol=1e-6)


def test_cifar10_in_archive_directory(cifar10_dir, tmp_path_factory):
    parent = tmp_path_factory.mktemp("parent")
    cifar10_dir["root"].rename(parent / "cifar-10-batches-bin")
    dataset, info = load_dataset("cifar10", root=parent)
    assert len(dataset) == 15
    assert info.source == str(parent / "cifar-10-batches-bin")


def test_cifar10_subset(cifar10_dir):
    full, _ = load_dataset("cifar10", root=cifar10_dir["root"])
    subset, info = load_dataset(
        "cifar10", root=cifar10_dir["root"], num_samples=5, seed=3
    )
    assert info.num_samples == 5
    rows = [
        next(i for i in range(len(full)) if torch.equal(full.tensors[0][i], image))
        for image in subset.tensors[0]
    ]
    assert rows == sorted(rows)
    assert torch.equal(full.tensors[1][rows], subset.tensors[1])


def test_cifar10_missing_files(cifar10_dir):
    root = cifar10_dir["root"]
    (root / "data_batch_3.bin").unlink()
    (root / "test_batch.bin").unlink()
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("cifar10", root=root)
    message = str(error.value)
    assert "data_batch_3.bin, test_batch.bin not found" in message
    assert "data_batch_1.bin" in message
    assert str(root) in message


def test_cifar10_empty_directory_lists_expected_files(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="no CIFAR-10 binary files found"
    ) as error:
        load_dataset("cifar10", root=tmp_path)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        assert name in str(error.value)


def test_cifar10_needs_root():
    with pytest.raises(ValueError, match=r"needs root.*data_batch_1\.bin"):
        load_dataset("cifar10")


def test_cifar10_root_not_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_dataset("cifar10", root=tmp_path / "absent")


def test_cifar10_truncated_file(cifar10_dir):
    path = cifar10_dir["root"] / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(
        ValueError, match=r"9218 bytes is not a positive multiple of the 3073-byte"
    ):
        load_dataset("cifar10", root=cifar10_dir["root"])


def test_cifar10_empty_file(cifar10_dir):
    (cifar10_dir["root"] / "test_batch.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="size of 0 bytes"):
        load_dataset("cifar10", root=cifar10_dir["root"], split="test")


def test_cifar10_label_out_of_range(cifar10_dir):
    images = random_images(np.random.default_rng(2), 2)
    write_cifar_file(cifar10_dir["root"] / "data_batch_5.bin", [3, 10], images)
    with pytest.raises(ValueError, match="contains 10, but labels must be below 10"):
        load_dataset("cifar10", root=cifar10_dir["root"])


def test_cifar10_constant_channel(cifar10_dir):
    root = cifar10_dir["root"]
    for index in range(1, 6):
        images = random_images(np.random.default_rng(index), 3)
        images[:, 1] = 128
        write_cifar_file(root / f"data_batch_{index}.bin", [0, 1, 2], images)
    with pytest.raises(
        ValueError, match="channel 1 of the training images is constant"
    ):
        load_dataset("cifar10", root=root)


def test_cifar10_pickle_version_is_rejected(tmp_path):
    # The python version of CIFAR-10 has files without the .bin suffix.
    for name in ["data_batch_1", "test_batch", "batches.meta"]:
        (tmp_path / name).write_bytes(b"\x80\x04")
    with pytest.raises(FileNotFoundError, match=r"data_batch_1\.bin"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar100_fine_and_coarse(cifar100_dir):
    coarse, fine, images = cifar100_dir["test"]
    dataset, info = load_dataset("cifar100", root=cifar100_dir["root"], split="test")
    assert info.num_classes == 100
    np.testing.assert_array_equal(dataset.tensors[1].numpy(), fine)
    np.testing.assert_array_equal(raw_pixels(dataset, info), images)

    dataset, info = load_dataset(
        "cifar100", root=cifar100_dir["root"], split="test", label_type="coarse"
    )
    assert info.num_classes == 20
    np.testing.assert_array_equal(dataset.tensors[1].numpy(), coarse)


def test_cifar100_record_size(cifar100_dir):
    path = cifar100_dir["root"] / "train.bin"
    path.write_bytes(path.read_bytes() + bytes(3073))
    with pytest.raises(ValueError, match="3074-byte record"):
        load_dataset("cifar100", root=cifar100_dir["root"])


def test_cifar100_coarse_label_out_of_range(cifar100_dir):
    images = random_images(np.random.default_rng(3), 1)
    write_cifar_file(cifar100_dir["root"] / "test.bin", [[20, 5]], images)
    with pytest.raises(ValueError, match="label byte 0 contains 20"):
        load_dataset("cifar100", root=cifar100_dir["root"], split="test")


def test_cifar100_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train\.bin, test\.bin"):
        load_dataset("cifar100", root=tmp_path)


def test_cifar_label_type_checks(cifar10_dir, cifar100_dir):
    with pytest.raises(ValueError, match="'fine' or 'coarse'"):
        load_dataset("cifar100", root=cifar100_dir["root"], label_type="medium")
    with pytest.raises(ValueError, match="does not take the option"):
        load_dataset("cifar10", root=cifar10_dir["root"], label_type="fine")


# Digits


@pytest.fixture(scope="module")
def digits():
    bunch = load_digits()
    return bunch.images, bunch.target


@pytest.fixture(scope="module")
def digits_splits():
    return load_dataset("digits"), load_dataset("digits", split="test")


def test_digits_shapes_and_types(digits_splits):
    (train, info), (test, test_info) = digits_splits
    assert train.tensors[0].shape == (1438, 1, 8, 8)
    assert test.tensors[0].shape == (359, 1, 8, 8)
    assert train.tensors[0].dtype == torch.float32
    assert train.tensors[1].dtype == torch.int64
    assert info.input_shape == (1, 8, 8)
    assert info.num_classes == 10
    assert (info.num_samples, test_info.num_samples) == (1438, 359)


def test_digits_split_is_stratified_partition(digits, digits_splits):
    images, labels = digits
    (train, info), (test, test_info) = digits_splits
    # Undo the standardisation and the scaling to get the integer pixels back.
    recovered = [
        np.round(
            (
                dataset.tensors[0].double().numpy() * split_info.std[0]
                + split_info.mean[0]
            )
            * 16
        ).reshape(-1, 64)
        for dataset, split_info in ((train, info), (test, test_info))
    ]
    combined = np.concatenate(recovered)
    expected = images.reshape(-1, 64)
    assert sorted(map(tuple, combined)) == sorted(map(tuple, expected))

    test_labels = test.tensors[1].numpy()
    for label in range(10):
        expected_count = round(DIGITS_TEST_FRACTION * np.sum(labels == label))
        assert np.sum(test_labels == label) == expected_count


def test_digits_standardised_with_train_statistics(digits_splits):
    (train, info), (_, test_info) = digits_splits
    assert test_info.mean == info.mean
    assert test_info.std == info.std
    assert abs(train.tensors[0].double().mean().item()) < 1e-6
    assert abs(train.tensors[0].double().std(correction=0).item() - 1) < 1e-6
    assert 0 < info.mean[0] < 1


def test_digits_deterministic(digits_splits):
    (train, _), _ = digits_splits
    again, _ = load_dataset("digits")
    assert torch.equal(train.tensors[0], again.tensors[0])
    assert torch.equal(train.tensors[1], again.tensors[1])


def test_digits_subset_nested_and_seeded(digits_splits):
    (full, _), _ = digits_splits
    small, info = load_dataset("digits", num_samples=100, seed=7)
    large, _ = load_dataset("digits", num_samples=400, seed=7)
    other, _ = load_dataset("digits", num_samples=100, seed=8)
    assert info.num_samples == 100
    assert len(small) == 100

    def rows_in(subset, superset):
        flat = superset.tensors[0].flatten(1)
        return [
            int(torch.nonzero((flat == image.flatten()).all(dim=1))[0])
            for image in subset.tensors[0]
        ]

    rows = rows_in(small, full)
    assert rows == sorted(rows)
    assert set(rows) <= set(rows_in(large, full))
    assert not torch.equal(small.tensors[0], other.tensors[0])


def test_digits_test_split_subset():
    test, info = load_dataset("digits", split="test", num_samples=50, seed=1)
    assert len(test) == 50
    assert info.split == "test"


def test_digits_ignores_root(tmp_path):
    dataset, _ = load_dataset("digits", root=tmp_path, num_samples=10)
    assert len(dataset) == 10


# Synthetic


def test_synthetic_defaults():
    train, info = load_dataset("synthetic")
    test, _ = load_dataset("synthetic", split="test")
    assert train.tensors[0].shape == (512, 1, 8, 8)
    assert test.tensors[0].shape == (256, 1, 8, 8)
    assert train.tensors[0].dtype == torch.float32
    assert train.tensors[1].dtype == torch.int64
    assert info.num_classes == 10
    assert set(train.tensors[1].tolist()) == set(range(10))


def test_synthetic_seeded():
    first, _ = load_dataset("synthetic", num_samples=64, seed=3)
    second, _ = load_dataset("synthetic", num_samples=64, seed=3)
    other, _ = load_dataset("synthetic", num_samples=64, seed=4)
    test, _ = load_dataset("synthetic", split="test", num_samples=64, seed=3)
    assert torch.equal(first.tensors[0], second.tensors[0])
    assert not torch.equal(first.tensors[0], other.tensors[0])
    assert not torch.equal(first.tensors[0], test.tensors[0])


def test_synthetic_splits_share_class_templates():
    train, _ = load_dataset("synthetic", num_samples=2000, noise=0.5, num_classes=3)
    test, _ = load_dataset(
        "synthetic", split="test", num_samples=2000, noise=0.5, num_classes=3
    )
    for label in range(3):
        train_mean = train.tensors[0][train.tensors[1] == label].mean(dim=0)
        test_mean = test.tensors[0][test.tensors[1] == label].mean(dim=0)
        assert (train_mean - test_mean).abs().max() < 0.2


def test_synthetic_options():
    dataset, info = load_dataset(
        "synthetic", num_samples=10, num_classes=3, channels=2, image_size=5
    )
    assert dataset.tensors[0].shape == (10, 2, 5, 5)
    assert info.num_classes == 3
    assert int(dataset.tensors[1].max()) < 3
    with pytest.raises(ValueError, match="num_classes must be an int of at least 2"):
        load_dataset("synthetic", num_classes=1)
    with pytest.raises(ValueError, match="noise must be a non-negative number"):
        load_dataset("synthetic", noise=-1.0)


# Arguments


def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'") as error:
        load_dataset("mnist")
    for name in DATASET_NAMES:
        assert name in str(error.value)


def test_invalid_split():
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_dataset("digits", split="validation")


def test_unknown_option():
    with pytest.raises(
        ValueError, match=r"'digits' does not take the option.*it takes none"
    ):
        load_dataset("digits", noise=1.0)
    with pytest.raises(ValueError, match="its options are: channels, image_size"):
        load_dataset("synthetic", label_type="fine")


@pytest.mark.parametrize(
    ("num_samples", "message"),
    [
        (0, "at least 1"),
        (-3, "at least 1"),
        (2.5, "must be an int or None"),
        (True, "must be an int or None"),
        (1439, "exceeds the 1438 samples of the digits train split"),
    ],
)
def test_invalid_num_samples(num_samples, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("digits", num_samples=num_samples)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0"])
def test_invalid_seed(seed):
    with pytest.raises(ValueError, match="seed must be"):
        load_dataset("synthetic", seed=seed)


def test_info_to_dict_is_json(digits_splits):
    (_, info), _ = digits_splits
    values = info.to_dict()
    assert json.loads(json.dumps(values)) == values
    assert values["image_size"] == [8, 8]
    assert isinstance(info, DatasetInfo)
