"""HessianOperator's promises to the caller: untouched model, state, interfaces."""

import gc
import weakref

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from hessian_reference import dense_hessian, relative_error
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hessop import HessianOperator


def mlp(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.2), nn.Linear(6, 3)
    )
    return model.to(dtype)


def data(num_samples=12, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, 4, generator=generator, dtype=dtype)
    y = torch.randint(0, 3, (num_samples,), generator=generator)
    return x, y


def batches(sizes=(5, 5, 2), seed=0):
    x, y = data(sum(sizes), seed)
    out, start = [], 0
    for size in sizes:
        out.append((x[start : start + size], y[start : start + size]))
        start += size
    return out


def test_model_comes_back_untouched():
    model = mlp()
    model.train()
    model[3].eval()  # a mixed mode must be restored module by module
    model[0].bias.requires_grad_(False)
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 7.0)
    model[4].weight.grad = None
    modes = [module.training for module in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    values = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]

    H = HessianOperator(model, nn.CrossEntropyLoss(), batches())
    H.matmat(np.ones((H.shape[0], 2)))

    assert [module.training for module in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    for key, value in model.state_dict().items():
        assert torch.equal(value, values[key]), key
    for parameter, grad in zip(model.parameters(), grads, strict=True):
        if grad is None:
            assert parameter.grad is None
        else:
            assert torch.equal(parameter.grad, grad)


def test_eval_mode_is_default():
    model = mlp()
    model.train()
    H = HessianOperator(model, nn.CrossEntropyLoss(), batches())
    model.eval()
    reference = dense_hessian(model, nn.CrossEntropyLoss(), batches())
    assert relative_error(H.to_dense(), reference) <= 1e-12  # eval: Dropout off


def test_optimizer_step_noticed_with_cached_graph():
    model = mlp()
    single = data()
    H = HessianOperator(model, nn.CrossEntropyLoss(), single)
    v = np.random.default_rng(0).standard_normal(H.shape[0])
    before = H.matvec(v)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = nn.functional.cross_entropy(model(single[0]), single[1])
    loss.backward()
    optimizer.step()

    after = H.matvec(v)
    expected = dense_hessian(model, nn.CrossEntropyLoss(), [single]).numpy() @ v
    assert relative_error(after, expected) <= 1e-12
    assert relative_error(after, before) > 1e-3  # the step changed the Hessian


def test_load_state_dict_noticed_on_copy():
    model = mlp(dtype=torch.float32)
    x, y = data(dtype=torch.float32)
    H = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), dtype=torch.float64)
    model.load_state_dict(mlp(seed=5, dtype=torch.float32).state_dict())
    reference_model = mlp(seed=5)
    expected = dense_hessian(reference_model, nn.CrossEntropyLoss(), [(x.double(), y)])
    assert relative_error(H.to_dense(), expected) <= 1e-12


def test_cached_graph_released_on_delete():
    model = mlp()
    H = HessianOperator(model, nn.CrossEntropyLoss(), data())
    H.matvec(np.ones(H.shape[0]))
    assert H._graph_cache.complete
    cached = weakref.ref(H._graph_cache.entries[0].grads[0])
    del H
    gc.collect()
    assert cached() is None


def test_clear_cache_releases_graph():
    H = HessianOperator(mlp(), nn.CrossEntropyLoss(), data())
    cached = weakref.ref(H._graph_cache.entries[0].grads[0])
    H.clear_cache()
    gc.collect()
    assert cached() is None
    assert np.all(np.isfinite(H.matvec(np.ones(H.shape[0]))))


def test_matvec_matmat_and_matmul_agree():
    H = HessianOperator(mlp(), nn.CrossEntropyLoss(), batches())
    n = H.shape[0]
    X = np.random.default_rng(1).standard_normal((n, 3))
    block = H.matmat(X)
    assert block.shape == (n, 3)
    for j in range(3):
        np.testing.assert_allclose(
            H.matvec(X[:, j]), block[:, j], rtol=1e-13, atol=1e-15
        )
    np.testing.assert_array_equal(H @ X, block)
    assert (H @ X[:, 0]).shape == (n,)
    assert H.matvec(X[:, :1]).shape == (n, 1)
    assert H.num_matvecs == 3 + 3 + 3 + 1 + 1


def test_adjoint_is_self():
    H = HessianOperator(mlp(), nn.CrossEntropyLoss(), batches())
    assert H.H is H
    assert H.T is H
    v = np.ones(H.shape[0])
    np.testing.assert_array_equal(H.rmatvec(v), H.matvec(v))


def test_dtype_rules():
    H32 = HessianOperator(
        mlp(dtype=torch.float32), nn.CrossEntropyLoss(), data(dtype=torch.float32)
    )
    n = H32.shape[0]
    assert H32.dtype == np.float32
    assert H32.matvec(np.ones(n, dtype=np.float32)).dtype == np.float32
    assert (
        H32.matvec(np.ones(n)).dtype == np.float64
    )  # the caller's precision comes back
    complex_result = H32.matvec(np.ones(n) + 2j * np.ones(n))
    np.testing.assert_allclose(complex_result.imag, 2 * complex_result.real, rtol=1e-6)


def test_half_precision_upcast_with_warning():
    model = mlp(dtype=torch.float32).to(torch.bfloat16)
    with pytest.warns(UserWarning, match="float32"):
        H = HessianOperator(model, nn.CrossEntropyLoss(), data(dtype=torch.float32))
    assert H.dtype == np.float32
    assert next(model.parameters()).dtype == torch.bfloat16


def test_hvp_torch_path_matches_matvec():
    H = HessianOperator(mlp(), nn.CrossEntropyLoss(), batches())
    v = torch.randn(H.shape[0], dtype=torch.float64)
    result = H.hvp(v)
    assert isinstance(result, torch.Tensor)
    np.testing.assert_allclose(
        result.numpy(), H.matvec(v.numpy()), rtol=1e-13, atol=1e-15
    )
    block = H.hvp(torch.stack([v, 2 * v], dim=1))
    assert block.shape == (H.shape[0], 2)


def test_layout_and_flatten_round_trip():
    model = mlp()
    H = HessianOperator(model, nn.CrossEntropyLoss(), batches())
    assert H.layout.names == [name for name, _ in model.named_parameters()]
    assert H.layout.size == H.shape[0]
    assert H.layout["4.weight"].shape == (3, 6)
    v = torch.arange(H.shape[0], dtype=torch.float64)
    pieces = H.unflatten(v)
    assert pieces["0.weight"].shape == (6, 4)
    assert torch.equal(pieces["0.weight"].reshape(-1), v[:24])
    assert torch.equal(H.flatten(pieces), v)


class TiedModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(3, 3, bias=False)
        self.decoder = nn.Linear(3, 3, bias=False)
        self.decoder.weight = self.encoder.weight

    def forward(self, x):
        return self.decoder(torch.tanh(self.encoder(x)))


def test_tied_weights_count_once():
    torch.manual_seed(0)
    model = TiedModel().double()
    x = torch.randn(5, 3, dtype=torch.float64)
    H = HessianOperator(model, nn.MSELoss(), (x, x))
    assert H.shape == (9, 9)
    assert H.layout.names == ["encoder.weight"]
    expected = dense_hessian(model, nn.MSELoss(), [(x, x)])
    assert relative_error(H.to_dense(), expected) <= 1e-12


def test_shuffling_loader_without_randomness_accepted():
    x, y = data(20)
    loader = DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True)
    model = mlp()
    H = HessianOperator(model, nn.CrossEntropyLoss(), loader)
    expected = dense_hessian(model, nn.CrossEntropyLoss(), [(x, y)])
    assert relative_error(H.to_dense(), expected) <= 1e-12


def test_shuffle_with_drop_last_rejected():
    x, y = data(20)
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True, drop_last=True)
    with pytest.raises(ValueError, match="drop_last"):
        HessianOperator(mlp(), nn.CrossEntropyLoss(), loader)


def test_works_inside_no_grad():
    with torch.no_grad():
        H = HessianOperator(mlp(), nn.CrossEntropyLoss(), batches())
        result = H.matvec(np.ones(H.shape[0]))
    assert np.all(np.isfinite(result))


def test_progress_bar_runs():
    H = HessianOperator(mlp(), nn.CrossEntropyLoss(), batches(), progress=True)
    assert np.all(np.isfinite(H.matvec(np.ones(H.shape[0]))))


def test_eigsh_and_lobpcg_on_operator():
    model = mlp()
    H = HessianOperator(model, nn.CrossEntropyLoss(), batches())
    dense = H.to_dense()
    expected = np.linalg.eigvalsh((dense + dense.T) / 2)[::-1][:2]
    found = scipy.sparse.linalg.eigsh(H, k=2, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(found)[::-1], expected, rtol=1e-8)
    X = np.random.default_rng(0).standard_normal((H.shape[0], 2))
    values, _ = scipy.sparse.linalg.lobpcg(H, X, largest=True, tol=1e-9, maxiter=500)
    np.testing.assert_allclose(np.sort(values)[::-1], expected, rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = mlp()
    H_cpu = HessianOperator(model, nn.CrossEntropyLoss(), batches())
    H_gpu = HessianOperator(model, nn.CrossEntropyLoss(), batches(), device="cuda")
    assert next(model.parameters()).device.type == "cpu"
    v = np.random.default_rng(0).standard_normal(H_cpu.shape[0])
    np.testing.assert_allclose(H_gpu.matvec(v), H_cpu.matvec(v), rtol=1e-10, atol=1e-12)
    w = torch.as_tensor(v, device=H_gpu.device)
    assert H_gpu.hvp(w).device.type == "cuda"
