"""HessianOperator on bad input: each case raises a clear error."""

import numpy as np
import pytest
import torch
from torch import nn

from hessop import HessianOperator


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def data(num_samples=6):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(num_samples, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 2, (num_samples,), generator=generator)
    return x, y


@pytest.fixture(scope="module")
def operator():
    return HessianOperator(model(), nn.CrossEntropyLoss(), data())


@pytest.mark.parametrize("shape", [(25,), (25, 2), (2, 26), (26, 1, 1)])
def test_wrong_vector_shape(operator, shape):
    with pytest.raises(ValueError, match=r"dimension mismatch.*\(26, 26\)"):
        operator @ np.ones(shape)


def test_scalar_vector_rejected(operator):
    with pytest.raises(ValueError, match=r"dimension mismatch.*\(26,\)"):
        operator.matvec(np.float64(1.0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_vector(operator, bad):
    v = np.ones(26)
    v[3] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        operator.matvec(v)
    with pytest.raises(ValueError, match="NaN or inf"):
        operator.hvp(torch.as_tensor(v))


def test_object_vector_rejected(operator):
    with pytest.raises(TypeError, match="numeric"):
        operator.matvec(np.array(["a"] * 26, dtype=object))


def test_hvp_wrong_dtype(operator):
    with pytest.raises(TypeError, match=r"v\.to\(torch\.float64\)"):
        operator.hvp(torch.ones(26, dtype=torch.float32))


def test_hvp_numpy_rejected(operator):
    with pytest.raises(TypeError, match="matvec"):
        operator.hvp(np.ones(26))


def test_empty_data():
    x = torch.zeros(0, 3, dtype=torch.float64)
    y = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="no samples"):
        HessianOperator(model(), nn.CrossEntropyLoss(), [(x, y), (x, y)])
    with pytest.raises(ValueError, match="no samples"):
        HessianOperator(model(), nn.CrossEntropyLoss(), [], check_deterministic=False)


def test_empty_batch_among_others_skipped():
    x, y = data()
    empty = (x[:0], y[:0])
    H = HessianOperator(model(), nn.CrossEntropyLoss(), [empty, (x, y)])
    assert H.num_samples == 6
    assert H.num_batches == 2


def test_no_selected_parameters():
    frozen = model()
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters selected"):
        HessianOperator(frozen, nn.CrossEntropyLoss(), data())


def test_unknown_parameter_name():
    with pytest.raises(ValueError, match=r"did you mean \['0.weight'"):
        HessianOperator(model(), nn.CrossEntropyLoss(), data(), ["0.weigth"])


def test_foreign_parameter_tensor():
    with pytest.raises(ValueError, match="not a parameter of the model"):
        HessianOperator(
            model(), nn.CrossEntropyLoss(), data(), [nn.Parameter(torch.ones(2))]
        )


def test_non_scalar_loss():
    with pytest.raises(ValueError, match="reduction='mean' or 'sum'"):
        HessianOperator(model(), nn.CrossEntropyLoss(reduction="none"), data())
    with pytest.raises(ValueError, match=r"shape \(6,\) for batch 0"):
        HessianOperator(
            model(),
            lambda out, t: nn.functional.cross_entropy(out, t, reduction="none"),
            data(),
        )


def test_reduction_contradicts_loss_module():
    with pytest.raises(ValueError, match="contradicts"):
        HessianOperator(
            model(), nn.CrossEntropyLoss(reduction="sum"), data(), reduction="mean"
        )
    with pytest.raises(ValueError, match="'mean' or 'sum'"):
        HessianOperator(
            model(), nn.functional.cross_entropy, data(), reduction="average"
        )


def test_non_finite_loss_names_batch():
    x, y = data()
    bad = x.clone()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="loss of batch 1 is not finite"):
        HessianOperator(model(), nn.CrossEntropyLoss(), [(x, y), (bad, y)])


class Quadratic(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return 1e20 * (self.w**2).sum()


def test_non_finite_product_names_batch():
    H = HessianOperator(
        Quadratic(),
        lambda out, t: out,
        (torch.zeros(1), torch.zeros(1)),
        check_deterministic=False,
    )
    # The Hessian is 2e20 * I; times 1e30 overflows float32.
    with pytest.raises(ValueError, match="product of batch 0 is not finite"):
        H.matvec(np.full(2, 1e30, dtype=np.float32))


def test_one_shot_iterator_rejected():
    x, y = data()
    with pytest.raises(TypeError, match="one-shot iterator"):
        HessianOperator(model(), nn.CrossEntropyLoss(), iter([(x, y)]))


def test_malformed_batches_rejected():
    x, y = data()
    with pytest.raises(ValueError, match="tuple of length 3"):
        HessianOperator(model(), nn.CrossEntropyLoss(), (x, y, y))
    with pytest.raises(TypeError, match="batch 1 must be a pair"):
        HessianOperator(model(), nn.CrossEntropyLoss(), [(x, y), x])
    with pytest.raises(TypeError, match=r"data=\(inputs, targets\)"):
        HessianOperator(model(), nn.CrossEntropyLoss(), x)


def test_targets_without_length_need_num_samples_fn():
    x, _ = data()
    with pytest.raises(TypeError, match="num_samples_fn"):
        HessianOperator(model(), lambda out, t: out.sum(), (x, None))


def test_bad_num_samples_fn_result():
    with pytest.raises(ValueError, match="non-negative integer"):
        HessianOperator(
            model(), nn.CrossEntropyLoss(), data(), num_samples_fn=lambda x, y: -1
        )


def test_bad_types():
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        HessianOperator(lambda x: x, nn.CrossEntropyLoss(), data())
    with pytest.raises(TypeError, match="callable"):
        HessianOperator(model(), "cross_entropy", data())


def test_half_dtype_request_rejected():
    with pytest.raises(ValueError, match=r"float32 or torch\.float64"):
        HessianOperator(model(), nn.CrossEntropyLoss(), data(), dtype=torch.float16)


def test_to_dense_above_max_size(operator):
    with pytest.raises(ValueError, match="pass max_size=26"):
        operator.to_dense(max_size=10)


def test_data_changing_size_detected():
    x, y = data()

    class Growing:
        def __init__(self):
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            size = 3 if self.passes <= 2 else 5
            return iter([(x[:size], y[:size])])

    H = HessianOperator(model(), nn.CrossEntropyLoss(), Growing())
    with pytest.raises(ValueError, match="changed size"):
        H.matvec(np.ones(26))


class WithSpare(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = model()
        self.spare = nn.Linear(2, 2).double()

    def forward(self, x):
        return self.body(x)


def test_loss_independent_of_block_warns_and_gives_zero():
    net = WithSpare()
    with pytest.warns(UserWarning, match="Hessian is zero"):
        H = HessianOperator(net, nn.CrossEntropyLoss(), data(), ["spare"])
    np.testing.assert_array_equal(H.to_dense(), np.zeros((6, 6)))
