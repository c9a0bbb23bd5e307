"""The training toolbox shared by fit and fit_data (ddm_numba.training), against independent
references: numpy's least squares, direct sums over samples, scipy's own minimizer."""
import numpy as np
import pytest

from ddm_numba import DDMError
from ddm_numba import matching, training
from ddm_numba.training import (RIDGE_FLOOR, Packer, _minimize, diffusion_loss_grad,
                                diffusion_objective, lowrank_scale, ridge_path_error,
                                ridge_solve)


def _problem(K=400, n=6, q=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((K, n))
    X[:, -1] = 1.0                                   # a bias column, as ψ has
    Y = X @ rng.standard_normal((n, q)) + 0.3 * rng.standard_normal((K, q))
    return X, Y, X.T @ X / K, X.T @ Y / K


def _lstsq_ridge(X, y, pen):
    """min (1/K)‖X θ − y‖² + Σ pen_i θ_i² as an ordinary least-squares problem on the stacked
    system [X/√K; diag(√pen)] θ = [y/√K; 0] (numpy's SVD solver: independent of ours)."""
    K = len(X)
    A = np.vstack([X / np.sqrt(K), np.diag(np.sqrt(pen))])
    b = np.concatenate([y / np.sqrt(K), np.zeros(len(pen))])
    return np.linalg.lstsq(A, b, rcond=None)[0]


def test_ridge_solve_matches_numpy_lstsq_with_shared_and_per_column_penalties():
    X, Y, G, C = _problem()
    n = G.shape[0]
    floor = RIDGE_FLOOR * np.trace(G) / n
    pen = np.r_[np.full(n - 1, 0.5), 0.0]             # bias unpenalized
    got = ridge_solve(G, C, pen)
    want = np.column_stack([_lstsq_ridge(X, Y[:, a], pen + floor) for a in range(Y.shape[1])])
    # a well-conditioned 6×6 problem: both solvers agree to ~1e-14; 1e-10 leaves room
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    per = np.array([pen * s for s in (0.1, 1.0, 10.0)])
    got = ridge_solve(G, C, per)
    for a in range(3):
        np.testing.assert_allclose(got[:, a], _lstsq_ridge(X, Y[:, a], per[a] + floor),
                                   rtol=1e-10, atol=1e-12)
    # no penalty: ordinary least squares up to the floor (relative 1e-12)
    np.testing.assert_allclose(ridge_solve(G, C), np.linalg.lstsq(X, Y, rcond=None)[0],
                               rtol=1e-9, atol=1e-11)
    # a penalty that matters moves the solution (the comparison above can fail)
    assert np.max(np.abs(ridge_solve(G, C, pen) - ridge_solve(G, C))) > 1e-3


def test_ridge_solve_floor_keeps_collinear_features_solvable_and_bad_input_is_refused():
    X, Y, G, C = _problem()
    Xc = np.column_stack([X, X[:, 0]])               # an exactly repeated feature
    Gc, Cc = Xc.T @ Xc / len(Xc), Xc.T @ Y / len(Xc)
    theta = ridge_solve(Gc, Cc)
    assert np.all(np.isfinite(theta))
    # the fit of the data is as good as without the duplicate (the floor is negligible)
    np.testing.assert_allclose(Xc @ theta, X @ ridge_solve(G, C), rtol=1e-6, atol=1e-6)
    with pytest.raises(DDMError, match="G must be"):
        ridge_solve(G[:3], C)
    with pytest.raises(DDMError, match="not finite"):
        ridge_solve(G * np.nan, C)
    with pytest.raises(DDMError, match="penalty must be"):
        ridge_solve(G, C, np.ones((2, G.shape[0])))


def test_ridge_path_error_equals_the_direct_held_out_mean_square():
    X, Y, G, C = _problem(seed=1)
    Xv, Yv, Gv, Cv = _problem(K=300, seed=2)
    theta = ridge_solve(G, C, np.full(G.shape[0], 0.2))
    direct = np.mean((Xv @ theta - Yv) ** 2, axis=0)
    got = ridge_path_error(theta, Gv, Cv, np.mean(Yv ** 2, axis=0))
    np.testing.assert_allclose(got, direct, rtol=1e-10)


def test_packer_round_trip_and_lowrank_scale_blocks():
    packer = Packer({"A": (2, 5), "b_z": (2,), "M": (5, 2), "c": (5,)})
    rng = np.random.default_rng(3)
    arrays = {k: rng.standard_normal(s) for k, s in packer.shapes.items()}
    back = packer.unpack(packer.pack(arrays))
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
    scale = packer.unpack(lowrank_scale(packer, arrays["A"], arrays["M"]))
    sA = np.abs(arrays["A"]).std()
    assert np.all(scale["A"] == sA) and np.all(scale["b_z"] == sA) and np.all(scale["c"] == 1)
    np.testing.assert_allclose(scale["M"][3], np.abs(arrays["M"]).std(axis=0))
    tiny = packer.unpack(lowrank_scale(packer, 1e-9 * arrays["A"], arrays["M"]))
    assert np.all(tiny["A"] == 1e-3)                  # the floor of the decoders' scale


def test_diffusion_objective_is_the_loss_over_the_mean_target_square():
    rng = np.random.default_rng(4)
    N, d, K = 7, 2, 50
    M, c, z = rng.standard_normal((N, d)), rng.standard_normal(N), rng.standard_normal((K, d))
    g = rng.standard_normal((K, d, d))
    Dt = np.einsum("kab,kcb->kac", g, g)
    packer = Packer({"S0": (d, d), "R": (d, d, N)})
    x = rng.standard_normal(packer.size)
    loss, grad = diffusion_loss_grad(x, packer, np.ascontiguousarray(z), Dt, M, c,
                                     np.zeros((d, d)), 0.01)
    obj = diffusion_objective(packer, z, Dt, M, c, np.zeros((d, d)), 0.01)
    ol, og = obj(x)
    s = np.mean(np.sum(Dt ** 2, axis=(1, 2)))
    assert ol == pytest.approx(loss / s, rel=1e-12)
    np.testing.assert_allclose(og, grad / s, rtol=1e-12)


def test_minimize_finds_a_quadratics_minimum_and_matching_keeps_the_names():
    rng = np.random.default_rng(5)
    B = rng.standard_normal((6, 6))
    H = B @ B.T + np.eye(6)
    x_star = rng.standard_normal(6)

    def fun(x):
        e = x - x_star
        return float(e @ H @ e), 2 * H @ e

    x, info = _minimize(fun, np.zeros(6), "test", 200, 1e-15, None)
    np.testing.assert_allclose(x, x_star, atol=1e-6)
    assert info["iterations"] > 0
    for name in ("Packer", "_minimize", "diffusion_loss_grad"):
        assert getattr(matching, name) is getattr(training, name)
