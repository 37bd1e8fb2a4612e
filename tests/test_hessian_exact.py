"""HessianOperator on cases whose Hessian is known in closed form."""

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from torch import nn

from hessop import HessianOperator


class HalfMSE(nn.Module):
    """0.5 * mean squared error, whose Hessian for a linear model is X^T X / N."""

    reduction = "mean"

    def forward(self, output, target):
        return 0.5 * nn.functional.mse_loss(output, target)


def short_last_batch_data():
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.zeros(3, 1, dtype=torch.float64)
    return [(x[:2], y[:2]), (x[2:], y[2:])]


def linear_model():
    torch.manual_seed(0)
    return nn.Linear(2, 1, bias=False).double()


def test_short_last_batch_weighted_by_samples():
    H = HessianOperator(linear_model(), HalfMSE(), short_last_batch_data())
    dense = H.to_dense()
    expected = np.diag([4 / 3, 2 / 3])
    # Closed form H = X^T X / N; float64 products, so 1e-14 is roundoff.
    np.testing.assert_allclose(dense, expected, rtol=0, atol=1e-14)
    mean_of_batch_means = np.diag([1.0, 0.75])
    assert not np.allclose(dense, mean_of_batch_means, atol=1e-3)


class WithUnusedLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(2, 1, bias=False)
        self.unused = nn.Linear(5, 5)

    def forward(self, x):
        return self.used(x)


def test_unused_parameters_give_zero_block():
    torch.manual_seed(0)
    model = WithUnusedLayer().double()
    H = HessianOperator(model, HalfMSE(), short_last_batch_data())
    assert H.shape == (32, 32)
    dense = H.to_dense()
    expected = np.zeros((32, 32))
    expected[:2, :2] = np.diag([4 / 3, 2 / 3])
    np.testing.assert_allclose(dense, expected, rtol=0, atol=1e-14)
    assert np.trace(dense) == pytest.approx(2.0, abs=1e-14)


def batch_norm_network():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)).double()


def regression_data(num_samples=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, 2, generator=generator, dtype=torch.float64)
    y = torch.randn(num_samples, 1, generator=generator, dtype=torch.float64)
    return x, y


def test_batch_norm_network_shapes():
    model = batch_norm_network()
    data = regression_data()
    assert HessianOperator(model, nn.MSELoss(), data).shape == (19, 19)
    for parameter in model[0].parameters():
        parameter.requires_grad_(False)
    assert HessianOperator(model, nn.MSELoss(), data).shape == (10, 10)


@pytest.mark.parametrize("train_mode", [False, True])
def test_buffers_unchanged_after_many_products(train_mode):
    model = batch_norm_network()
    with torch.no_grad():
        model[1].running_mean.fill_(0.3)
        model[1].running_var.fill_(2.0)
    before = {name: b.clone() for name, b in model.named_buffers()}
    x, y = regression_data()
    H = HessianOperator(model, nn.MSELoss(), (x, y), train_mode=train_mode)
    v = np.ones(H.shape[0])
    for _ in range(100):
        H.matvec(v)
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name


def test_identity_batch_norm_changes_nothing():
    torch.manual_seed(0)
    first = nn.Linear(2, 3).double()
    last = nn.Linear(3, 1).double()
    norm = nn.BatchNorm1d(3, eps=0.0).double()
    for parameter in norm.parameters():
        parameter.requires_grad_(False)
    with_norm = nn.Sequential(first, norm, last)
    without_norm = nn.Sequential(first, last)
    data = regression_data()

    dense_with = HessianOperator(with_norm, nn.MSELoss(), data).to_dense()
    dense_without = HessianOperator(without_norm, nn.MSELoss(), data).to_dense()
    assert dense_with.shape == (13, 13)
    # Running mean 0, variance 1, eps 0: the layer is exactly the identity.
    np.testing.assert_allclose(dense_with, dense_without, rtol=1e-14, atol=1e-14)


class ScalarOfParameter(nn.Module):
    """A model whose output is a function of its parameter alone."""

    def __init__(self, values, function):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(values, dtype=torch.float64))
        self.function = function

    def forward(self, inputs):
        return self.function(self.w)


def identity_loss(output, target):
    return output


def one_sample():
    return torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)


def test_norm_hessian_closed_form():
    model = ScalarOfParameter([3.0, 4.0], torch.linalg.vector_norm)
    dense = HessianOperator(model, identity_loss, one_sample()).to_dense()
    # (I - w w^T / |w|^2) / |w| at w = (3, 4).
    expected = np.array([[0.128, -0.096], [-0.096, 0.072]])
    np.testing.assert_allclose(dense, expected, rtol=0, atol=1e-15)


def test_relu_product_hessian_closed_form():
    model = ScalarOfParameter([1.0, 2.0], lambda w: torch.relu(w[0]) * w[1])
    dense = HessianOperator(model, identity_loss, one_sample()).to_dense()
    np.testing.assert_array_equal(dense, np.array([[0.0, 1.0], [1.0, 0.0]]))


def tanh_mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def test_float64_symmetric_and_eigsh_matches():
    model = tanh_mlp()
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(10, 2, generator=generator, dtype=torch.float64)
    H = HessianOperator(model, nn.MSELoss(), [(x[:4], y[:4]), (x[4:], y[4:])])
    assert H.dtype == np.float64
    assert H.matvec(np.ones(H.shape[0])).dtype == np.float64

    dense = H.to_dense()
    asymmetry = np.abs(dense - dense.T).max() / np.abs(dense).max()
    assert asymmetry <= 1e-12

    expected = np.linalg.eigvalsh(dense)[-3:]
    found = scipy.sparse.linalg.eigsh(H, k=3, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(found), expected, rtol=1e-8, atol=1e-8)


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.dropout = nn.Dropout(0.5)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.dropout(torch.tanh(self.hidden(x))))


def classification_data(num_samples=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, 4, generator=generator)
    y = torch.randint(0, 2, (num_samples,), generator=generator)
    return x, y


def test_dropout_in_train_mode_rejected():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"(?i)dropout|train mode") as info:
        HessianOperator(
            DropoutNet(), nn.CrossEntropyLoss(), classification_data(), train_mode=True
        )
    assert "check_deterministic=False" in str(info.value)


def test_dropout_in_eval_mode_deterministic():
    torch.manual_seed(0)
    H = HessianOperator(DropoutNet(), nn.CrossEntropyLoss(), classification_data())
    v = np.random.default_rng(0).standard_normal(H.shape[0])
    np.testing.assert_array_equal(H.matvec(v), H.matvec(v))
