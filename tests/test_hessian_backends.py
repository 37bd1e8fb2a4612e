"""The product options: second-derivative rules, backends, compile and block size.

Every option must give the products of the default path. Each test compares
float64 products with the default operator or with a dense Hessian from
torch.func.hessian, with the tolerance stated at the assert.
"""

import numpy as np
import pytest
import torch
from hessian_reference import dense_hessian, relative_error
from torch import nn
from torch.nn import functional as F

from hessop import HessianOperator
from hessop._rules import second_order_rules


class ConvNet(nn.Module):
    """Convolutions of every kind the rules cover, BatchNorm and ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2)
        self.bn2 = nn.BatchNorm2d(4, affine=False)
        self.conv3 = nn.Conv2d(4, 3, 1, padding="same")
        self.conv1d = nn.Conv1d(3, 2, 2)
        self.bn1d = nn.BatchNorm1d(2)
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.conv3(x), inplace=True)
        x = self.conv1d(x.flatten(2))
        x = F.relu(self.bn1d(x.mean(dim=2)))
        return self.head(x)


def conv_net(seed=0):
    torch.manual_seed(seed)
    model = ConvNet().double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def conv_data(num_samples=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, 2, 6, 6, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (num_samples,), generator=generator)
    return x, y


def conv_batches(sizes=(3, 3, 2)):
    x, y = conv_data(sum(sizes))
    out, start = [], 0
    for size in sizes:
        out.append((x[start : start + size], y[start : start + size]))
        start += size
    return out


def mlp(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)
    )
    return model.double()


def mlp_batches(sizes=(5, 5, 2), seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (sum(sizes),), generator=generator)
    out, start = [], 0
    for size in sizes:
        out.append((x[start : start + size], y[start : start + size]))
        start += size
    return out


def random_matrix(n, k, seed=0):
    return np.random.default_rng(seed).standard_normal((n, k))


def record_pass_widths(H):
    """Return a list that receives the number of vectors of each pass of H."""
    widths = []
    original = H._apply

    def record(Vt):
        widths.append(Vt.shape[0])
        return original(Vt)

    H._apply = record
    return widths


@pytest.mark.parametrize("layer_rules", [True, False])
def test_conv_net_matches_dense(layer_rules):
    model = conv_net()
    batches = conv_batches()
    H = HessianOperator(model, nn.CrossEntropyLoss(), batches, layer_rules=layer_rules)
    expected = dense_hessian(model, nn.CrossEntropyLoss(), batches)
    assert relative_error(H.to_dense(), expected) <= 1e-10  # float64 rounding


def test_layer_rules_equal_pytorch_rules():
    batches = conv_batches()
    with_rules = HessianOperator(conv_net(), nn.CrossEntropyLoss(), batches)
    without = HessianOperator(
        conv_net(), nn.CrossEntropyLoss(), batches, layer_rules=False
    )
    X = random_matrix(with_rules.shape[0], 3)
    # Both are exact; they differ only in the order of float64 roundings.
    assert relative_error(with_rules.matmat(X), without.matmat(X)) <= 1e-12


def test_layer_rules_on_parameter_block():
    # Only the second convolution's weight: the rules must skip the gradients
    # of inputs and weights that are not differentiated.
    model = conv_net()
    batches = conv_batches()
    H = HessianOperator(model, nn.CrossEntropyLoss(), batches, params=["conv2.weight"])
    expected = dense_hessian(model, nn.CrossEntropyLoss(), batches, ["conv2.weight"])
    assert relative_error(H.to_dense(), expected) <= 1e-10  # float64 rounding


def test_layer_rules_in_train_mode():
    # BatchNorm on batch statistics is not affine, so it keeps PyTorch's rule;
    # the convolutions and ReLUs still use hessop's.
    batches = conv_batches()
    with_rules = HessianOperator(
        conv_net(), nn.CrossEntropyLoss(), batches, train_mode=True
    )
    without = HessianOperator(
        conv_net(), nn.CrossEntropyLoss(), batches, train_mode=True, layer_rules=False
    )
    X = random_matrix(with_rules.shape[0], 2)
    assert relative_error(with_rules.matmat(X), without.matmat(X)) <= 1e-12


@pytest.mark.parametrize(
    ("layer", "x_shape", "w_shape"),
    [
        (lambda x, w: F.conv2d(x, w, stride=2, padding=1), (2, 2, 5, 5), (3, 2, 3, 3)),
        (
            lambda x, w: F.conv2d(x, w, padding=(2, 1), dilation=(2, 1), groups=2),
            (2, 4, 5, 5),
            (4, 2, 3, 3),
        ),
        (lambda x, w: F.conv1d(x, w, stride=3), (2, 2, 7), (3, 2, 2)),
        (lambda x, w: F.conv3d(x, w, padding=1), (1, 2, 3, 4, 4), (2, 2, 3, 3, 3)),
    ],
)
def test_convolution_rule_second_derivatives(layer, x_shape, w_shape):
    # gradgradcheck compares the rule's second derivatives with finite
    # differences of its first ones.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=generator, dtype=torch.float64)
    w = torch.randn(w_shape, generator=generator, dtype=torch.float64)
    x.requires_grad_(True)
    w.requires_grad_(True)

    def function(x, w):
        with second_order_rules():
            return torch.tanh(layer(x, w))

    assert torch.autograd.gradgradcheck(function, (x, w))


def test_batch_norm_and_relu_rules_second_derivatives():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 2, generator=generator, dtype=torch.float64)
    mean = torch.randn(4, generator=generator, dtype=torch.float64)
    var = torch.rand(4, generator=generator, dtype=torch.float64) + 0.5
    weight = torch.randn(4, generator=generator, dtype=torch.float64)
    bias = torch.randn(4, generator=generator, dtype=torch.float64)
    for tensor in (x, weight, bias):
        tensor.requires_grad_(True)

    def function(x, weight, bias):
        with second_order_rules():
            y = F.batch_norm(x, mean, var, weight, bias, training=False)
            return F.relu(y) * y

    assert torch.autograd.gradgradcheck(function, (x, weight, bias))


def test_rules_leave_other_calls_alone():
    x = torch.randn(2, 3, 4, 4)
    w = torch.randn(3, 3, 3, 3)
    with second_order_rules():
        same = F.conv2d(x, w, padding="same")
        y = F.relu(x.clone(), inplace=True)
        unbatched = F.conv2d(x[0], w, padding=1)
    assert same.grad_fn is None
    assert y.grad_fn is None
    assert torch.equal(unbatched, F.conv2d(x[0], w, padding=1))


@pytest.mark.parametrize("train_mode", [False, True])
def test_func_backend_equals_autograd(train_mode):
    batches = mlp_batches()
    autograd = HessianOperator(
        mlp(), nn.CrossEntropyLoss(), batches, train_mode=train_mode
    )
    func = HessianOperator(
        mlp(),
        nn.CrossEntropyLoss(),
        batches,
        train_mode=train_mode,
        backend="func",
        cache_budget="unlimited",
    )
    X = random_matrix(autograd.shape[0], 3)
    assert relative_error(func.matmat(X), autograd.matmat(X)) <= 1e-12  # float64
    assert func._graph_cache.complete


def test_func_backend_conv_net_matches_dense():
    model = conv_net()
    batches = conv_batches()
    H = HessianOperator(model, nn.CrossEntropyLoss(), batches[0], backend="func")
    expected = dense_hessian(model, nn.CrossEntropyLoss(), batches[:1])
    assert relative_error(H.to_dense(), expected) <= 1e-10  # float64 rounding


def test_func_backend_partial_cache_linearises_leading_batches():
    unlimited = HessianOperator(
        mlp(),
        nn.CrossEntropyLoss(),
        mlp_batches(),
        backend="func",
        cache_budget="unlimited",
    )
    per_batch = unlimited._graph_cache.entries[0].nbytes
    assert 0 < per_batch < float("inf")
    H = HessianOperator(
        mlp(),
        nn.CrossEntropyLoss(),
        mlp_batches(),
        backend="func",
        cache_budget=1.5 * per_batch,
    )
    assert sorted(H._graph_cache.entries) == [0]
    assert H._unlinearized == {1, 2}
    reference = HessianOperator(mlp(), nn.CrossEntropyLoss(), mlp_batches())
    X = random_matrix(H.shape[0], 2)
    # The kept batch is linearised; the others run jvp per column.
    assert relative_error(H.matmat(X), reference.matmat(X)) <= 1e-12


def test_func_backend_without_cache_runs_jvp():
    H = HessianOperator(mlp(), nn.CrossEntropyLoss(), mlp_batches(), backend="func")
    assert not H._graph_cache.entries
    reference = HessianOperator(mlp(), nn.CrossEntropyLoss(), mlp_batches())
    v = random_matrix(H.shape[0], 1)[:, 0]
    assert relative_error(H.matvec(v), reference.matvec(v)) <= 1e-12  # float64


def test_func_backend_notices_optimizer_step():
    model = mlp()
    batch = mlp_batches()[0]
    H = HessianOperator(model, nn.CrossEntropyLoss(), batch, backend="func")
    v = random_matrix(H.shape[0], 1)[:, 0]
    H.matvec(v)
    with torch.no_grad():
        model[0].weight.mul_(1.5)
    expected = dense_hessian(model, nn.CrossEntropyLoss(), [batch]).numpy() @ v
    assert relative_error(H.matvec(v), expected) <= 1e-10  # float64 rounding


@pytest.mark.slow
def test_compiled_func_backend_matches_autograd():
    batch = mlp_batches()[0]
    H = HessianOperator(
        mlp(), nn.CrossEntropyLoss(), batch, backend="func", compile=True
    )
    reference = HessianOperator(mlp(), nn.CrossEntropyLoss(), batch)
    X = random_matrix(H.shape[0], 2)
    # Compiled kernels may reorder float64 sums.
    assert relative_error(H.matmat(X), reference.matmat(X)) <= 1e-10
    assert not H._graph_cache.entries


@pytest.mark.parametrize("block_size", [1, 2, 5, None])
def test_block_size_gives_same_matmat(block_size):
    batches = mlp_batches()
    reference = HessianOperator(mlp(), nn.CrossEntropyLoss(), batches, block_size=None)
    H = HessianOperator(mlp(), nn.CrossEntropyLoss(), batches, block_size=block_size)
    X = random_matrix(H.shape[0], 5)
    # Blocks change only which columns share a pass, not the arithmetic.
    np.testing.assert_array_equal(H.matmat(X), reference.matmat(X))
    V = torch.as_tensor(X)
    np.testing.assert_array_equal(H.hvp(V).numpy(), reference.matmat(X))
    assert H.num_matvecs == 10


def test_block_size_bounds_columns_per_pass():
    H = HessianOperator(mlp(), nn.CrossEntropyLoss(), mlp_batches(), block_size=2)
    widths = record_pass_widths(H)
    H.matmat(random_matrix(H.shape[0], 5))
    assert widths == [2, 2, 1]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"backend": "jax"}, ValueError, "backend must be one of"),
        ({"compile": True}, ValueError, "compile=True needs backend='func'"),
        ({"compile": 1, "backend": "func"}, TypeError, "compile must be a bool"),
        ({"layer_rules": "yes"}, TypeError, "layer_rules must be a bool"),
        ({"block_size": 0}, ValueError, "block_size must be at least 1"),
        ({"block_size": 2.0}, TypeError, "block_size must be an int or None"),
        ({"block_size": True}, TypeError, "block_size must be an int or None"),
    ],
)
def test_invalid_product_options(options, error, match):
    with pytest.raises(error, match=match):
        HessianOperator(mlp(), nn.CrossEntropyLoss(), mlp_batches()[0], **options)


def test_func_backend_reports_torch_func_failure():
    # PyTorch 2.13's forward-over-reverse derivative of mse_loss raises
    # ('ZeroTensors are immutable'), and its linearize crashes the process,
    # so the jvp that runs first must turn it into a clear error.
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.randn(6, 1, dtype=torch.float64)
    try:
        torch.func.jvp(
            torch.func.grad(lambda w: F.mse_loss(x @ w.T, y)),
            (model.weight.detach(),),
            (torch.ones_like(model.weight),),
        )
    except RuntimeError:
        pass
    else:
        pytest.skip("this PyTorch differentiates mse_loss in forward mode")
    H = HessianOperator(
        model, nn.MSELoss(), (x, y), backend="func", check_deterministic=False
    )
    with pytest.raises(RuntimeError, match="use backend='autograd'"):
        H.matvec(np.ones(H.shape[0]))
    with pytest.raises(RuntimeError, match="use backend='autograd'"):
        HessianOperator(model, nn.MSELoss(), (x, y), backend="func")


def test_func_backend_rejects_wrong_linearization():
    # torch.func.linearize of a circularly padded convolution returned wrong
    # values in PyTorch 2.13 while jvp was right; the comparison must catch it.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(2, 2, 3, padding=1, padding_mode="circular"),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(10, 2),
    ).double()
    x = torch.randn(4, 2, 5, dtype=torch.float64)
    y = torch.randint(0, 2, (4,))
    reference = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    H = HessianOperator(
        model,
        nn.CrossEntropyLoss(),
        (x, y),
        backend="func",
        check_deterministic=False,
    )
    v = random_matrix(H.shape[0], 1)[:, 0]
    try:
        product = H.matvec(v)
    except RuntimeError as error:
        assert "torch.func.linearize gave a Hessian-vector product" in str(error)
        return
    # Where linearize is right, the operator must match the default one.
    assert relative_error(product, reference.matvec(v)) <= 1e-12  # float64


def test_func_backend_block_with_batch_norm():
    # BatchNorm's buffers outside the block are folded constants without an
    # accessible storage; the cache estimate must count them without failing.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model = model.double().eval()
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (5,))
    H = HessianOperator(
        model, nn.CrossEntropyLoss(), (x, y), params=["0"], backend="func"
    )
    expected = dense_hessian(
        model, nn.CrossEntropyLoss(), [(x, y)], ["0.weight", "0.bias"]
    )
    assert relative_error(H.to_dense(), expected) <= 1e-10  # float64 rounding
    assert 0 < H._graph_cache.nbytes < float("inf")


def test_func_backend_zero_budget_never_linearizes(monkeypatch):
    calls = []
    original = torch.func.linearize

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.func, "linearize", counted)
    H = HessianOperator(mlp(), nn.CrossEntropyLoss(), mlp_batches(), backend="func")
    H.matvec(random_matrix(H.shape[0], 1)[:, 0])
    assert calls == []
    assert not H._graph_cache.entries


def test_to_dense_follows_block_size():
    H = HessianOperator(mlp(), nn.CrossEntropyLoss(), mlp_batches(), block_size=4)
    widths = record_pass_widths(H)
    dense = H.to_dense()
    assert max(widths) == 4
    assert sum(widths) == H.shape[0]
    widths.clear()
    np.testing.assert_array_equal(H.to_dense(block_size=np.int64(7)), dense)
    assert max(widths) == 7


@pytest.mark.parametrize("block_size", [2.5, "4", True])
def test_to_dense_rejects_bad_block_size(block_size):
    H = HessianOperator(mlp(), nn.CrossEntropyLoss(), mlp_batches()[0])
    with pytest.raises(TypeError, match="block_size must be an int or None"):
        H.to_dense(block_size=block_size)


def test_numpy_integers_accepted_as_sizes():
    H = HessianOperator(
        mlp(),
        nn.CrossEntropyLoss(),
        mlp_batches(),
        block_size=np.int64(3),
        cache_budget=np.int64(10**9),
    )
    assert H._block_size == 3
    assert H._graph_cache.complete
