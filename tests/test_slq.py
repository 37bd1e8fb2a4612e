"""slq and SpectralDensity: quadrature nodes, weights and the smoothed density."""

import numpy as np
import pytest
from hypothesis import given, settings
from scipy.sparse.linalg import LinearOperator
from spectra import distinct_spectra, with_spectrum

import hessop


class RecordingOperator(LinearOperator):
    """A dense operator that records the column count of every matmat call."""

    def __init__(self, A):
        super().__init__(dtype=np.float64, shape=A.shape)
        self.A = A
        self.block_widths = []

    def _matvec(self, x):
        self.block_widths.append(1)
        return self.A @ x

    def _matmat(self, X):
        self.block_widths.append(X.shape[1])
        return self.A @ X


def test_slq_diag_nodes():
    result = hessop.slq(np.diag([1.0, 2.0, 3.0, 4.0]), num_steps=4, seed=0)
    np.testing.assert_allclose(result.nodes[0], [1.0, 2.0, 3.0, 4.0], atol=1e-12)


def test_slq_diag_weights():
    result = hessop.slq(np.diag([1.0, 2.0, 3.0, 4.0]), num_steps=4, seed=0)
    # Weight j is (e_j^T z)^2 / ||z||^2 = 1/4 for a sign vector z.
    np.testing.assert_allclose(result.weights[0], [0.25] * 4, atol=1e-12)


def test_slq_diag_trace():
    result = hessop.slq(np.diag([1.0, 2.0, 3.0, 4.0]), num_steps=4, seed=0)
    assert result.trace_estimate(4) == pytest.approx(10.0, rel=1e-12)
    assert result.trace_estimate() == pytest.approx(10.0, rel=1e-12)


def test_slq_diag_density_integral():
    result = hessop.slq(np.diag([1.0, 2.0, 3.0, 4.0]), num_steps=4, seed=0)
    grid, values = result.density()
    assert np.trapezoid(values, grid) == pytest.approx(1.0, abs=1e-6)


def test_slq_diag_density_covers_nodes():
    result = hessop.slq(np.diag([1.0, 2.0, 3.0, 4.0]), num_steps=4, seed=0)
    curve = result.density()
    # The grid ends 5 sigma beyond the extreme nodes, up to rounding.
    assert curve.grid[0] <= result.nodes[0].min() - 5 * curve.sigma + 1e-12
    assert curve.grid[-1] >= result.nodes[0].max() + 5 * curve.sigma - 1e-12


def test_slq_default_sigma():
    result = hessop.slq(np.diag([1.0, 2.0, 3.0, 4.0]), num_steps=4, seed=0)
    # 1 % of the spectral range 3.
    assert result.density().sigma == pytest.approx(0.03, rel=1e-12)


def test_slq_identity():
    result = hessop.slq(3.0 * np.eye(50), seed=1)
    np.testing.assert_allclose(result.nodes[0], [3.0], rtol=1e-15)
    np.testing.assert_allclose(result.weights[0], [1.0], rtol=1e-15)
    assert result.breakdown[0]
    assert result.num_matvecs == 1


def test_slq_identity_density():
    result = hessop.slq(3.0 * np.eye(50), num_probes=3, seed=1)
    grid, values = curve = result.density()
    # The range is 0, so sigma falls back to 1 % of |3|.
    assert curve.sigma == pytest.approx(0.03, rel=1e-12)
    assert np.all(np.isfinite(values))
    assert np.trapezoid(values, grid) == pytest.approx(1.0, abs=1e-6)


def test_slq_zero_matrix_sigma():
    result = hessop.slq(np.zeros((5, 5)), seed=2)
    assert result.density().sigma == 0.01


def test_slq_several_probes_density_integral():
    A = with_spectrum(np.concatenate([[50.0], np.linspace(-1.0, 2.0, 99)]), seed=3)
    result = hessop.slq(A, num_steps=30, num_probes=4, seed=3, block_size=2)
    grid, values = result.density()
    assert np.trapezoid(values, grid) == pytest.approx(1.0, abs=1e-6)


def test_slq_weights_sum_to_one():
    A = with_spectrum(np.linspace(-1.0, 2.0, 100), seed=4)
    result = hessop.slq(A, num_steps=30, num_probes=3, seed=4)
    for weights in result.weights:
        assert weights.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.all(weights >= 0.0)


def test_slq_trace_matches_hutchinson():
    # sum(weights * nodes) = e_1^T T e_1 = v^T A v for v = z / sqrt(n), so
    # with the same seed (the same Rademacher probes) the trace estimate is
    # Hutchinson's, after any number of steps.
    A = with_spectrum(np.linspace(-1.0, 2.0, 60), seed=5)
    result = hessop.slq(A, num_steps=7, num_probes=5, seed=5)
    hutchinson = hessop.hutchinson(A, num_matvecs=5, seed=5)
    assert result.trace_estimate() == pytest.approx(hutchinson.estimate, rel=1e-12)


def test_slq_blocks_used():
    A = with_spectrum(np.linspace(-1.0, 2.0, 40), seed=6)
    op = RecordingOperator(A)
    result = hessop.slq(op, num_steps=10, num_probes=5, seed=6, block_size=2)
    assert max(op.block_widths) <= 2
    assert sum(op.block_widths) == result.num_matvecs
    assert result.num_matvecs == 50


def test_slq_block_size_invariant():
    A = with_spectrum(np.linspace(-1.0, 2.0, 40), seed=7)
    one = hessop.slq(A, num_steps=10, num_probes=4, seed=7, block_size=1)
    four = hessop.slq(A, num_steps=10, num_probes=4, seed=7, block_size=4)
    for nodes_one, nodes_four in zip(one.nodes, four.nodes, strict=True):
        np.testing.assert_allclose(nodes_one, nodes_four, rtol=1e-10, atol=1e-12)


def test_slq_breakdown_per_probe():
    # Two distinct eigenvalues: every probe's Krylov space is invariant after
    # two steps.
    A = with_spectrum([1.0] * 10 + [4.0] * 10, seed=8)
    result = hessop.slq(A, num_steps=20, num_probes=3, seed=8)
    assert result.breakdown.tolist() == [True, True, True]
    assert result.num_matvecs == 6


def test_slq_density_matches_spectrum():
    # 400 eigenvalues evenly spread over [0, 1]: the smoothed SLQ density
    # must be close to the same kernel applied to the true eigenvalues.
    eigenvalues = np.linspace(0.0, 1.0, 400)
    A = with_spectrum(eigenvalues, seed=9)
    result = hessop.slq(A, num_steps=40, num_probes=10, seed=9, block_size=10)
    grid, values = result.density(sigma=0.05)
    true = hessop.SpectralDensity(
        nodes=(eigenvalues,),
        weights=(np.full(400, 1.0 / 400),),
        breakdown=np.array([True]),
        num_matvecs=0,
        dimension=400,
    )
    _, expected = true.density(grid=grid, sigma=0.05)
    # L1 distance of two densities is at most 2; 10 probes give about 0.05.
    assert np.trapezoid(np.abs(values - expected), grid) < 0.15


def test_slq_density_explicit_grid():
    result = hessop.slq(np.diag([1.0, 2.0]), num_steps=2, seed=10)
    grid, values = result.density(grid=[1.0, 1.5, 2.0], sigma=0.5)
    np.testing.assert_array_equal(grid, [1.0, 1.5, 2.0])
    # At t = 1.5 both nodes (weight 0.5) lie 1 sigma away.
    expected = np.exp(-0.5) / (0.5 * np.sqrt(2 * np.pi))
    assert values[1] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sigma": 0.0}, ValueError, "sigma must be a finite positive"),
        ({"sigma": "wide"}, TypeError, "sigma must be a real number"),
        ({"grid": [[1.0]]}, ValueError, "1-D"),
        ({"sigma": 1e-9}, ValueError, "explicit grid"),
    ],
)
def test_slq_density_invalid_arguments(kwargs, error, match):
    result = hessop.slq(np.diag([1.0, 2.0, 3.0]), num_steps=3, seed=11)
    with pytest.raises(error, match=match):
        result.density(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_steps": 0}, ValueError, "num_steps must be at least 1"),
        ({"num_probes": 0}, ValueError, "num_probes must be at least 1"),
        ({"block_size": 0}, ValueError, "block_size must be at least 1"),
    ],
)
def test_slq_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        hessop.slq(np.eye(3), **kwargs)


@settings(max_examples=25, deadline=None)
@given(case=distinct_spectra(min_size=2, max_size=30))
def test_slq_full_steps_property(case):
    eigenvalues, seed = case
    A = with_spectrum(eigenvalues, seed)
    result = hessop.slq(A, num_steps=eigenvalues.size, seed=seed)
    nodes, weights = result.nodes[0], result.weights[0]
    # n steps: the nodes are the eigenvalues up to rounding (1e-10 of <= 10).
    np.testing.assert_allclose(nodes, eigenvalues, atol=1e-10)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(case=distinct_spectra(min_size=5, max_size=30))
def test_slq_nodes_inside_spectrum_property(case):
    eigenvalues, seed = case
    A = with_spectrum(eigenvalues, seed)
    nodes = hessop.slq(A, num_steps=4, seed=seed).nodes[0]
    # Ritz values lie in [lambda_min, lambda_max], up to rounding.
    assert nodes.min() >= eigenvalues[0] - 1e-10
    assert nodes.max() <= eigenvalues[-1] + 1e-10
