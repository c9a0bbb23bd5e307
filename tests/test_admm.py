"""admm.solve_box_qp and FullGram's tube (docs/model.md §4d), against independent solutions."""
import numpy as np
import pytest
import scipy.optimize

from ddm_numba.admm import solve_box_qp


def _problem(seed, N=7, n=9):
    """A box QP with the full fit's difficulties: G's spectrum over eight decades, A singular,
    a ridge on some columns only, entries fixed at 0 (a mask), sign bounds (Dale's law)."""
    rng = np.random.default_rng(seed)
    Vg = np.linalg.qr(rng.standard_normal((n, n)))[0]
    G = (Vg * np.logspace(0, -8, n)) @ Vg.T
    L = rng.standard_normal((N, N - 2))
    A = L @ L.T                                  # rank N − 2
    B = rng.standard_normal((N, n))
    e = np.where(np.arange(n) < N, 1e-3, 0.0)
    sign = np.where(np.arange(n) % 3 == 0, -1.0, 1.0)
    lo = np.where(sign > 0, 0.0, -np.inf)[None, :].repeat(N, 0)
    hi = np.where(sign > 0, np.inf, 0.0)[None, :].repeat(N, 0)
    fixed = rng.random((N, n)) < 0.3
    lo[fixed], hi[fixed] = 0.0, 0.0
    return A, G, B, e, lo, hi


def _q(Th, A, G, B, e):
    return float(np.sum((A @ Th @ G) * Th) - 2 * np.sum(B * Th) + np.sum(e * Th ** 2))


def _lbfgsb(A, G, B, e, lo, hi):
    """The reference: scipy's L-BFGS-B on the flattened problem, run far past need."""
    shape = B.shape

    def fun(v):
        Th = v.reshape(shape)
        return _q(Th, A, G, B, e), (2 * (A @ Th @ G - B + Th * e)).ravel()
    res = scipy.optimize.minimize(fun, np.zeros(B.size), jac=True, method="L-BFGS-B",
                                  bounds=list(zip(lo.ravel(), hi.ravel())),
                                  options={"maxiter": 50000, "ftol": 0, "gtol": 1e-12,
                                           "maxcor": 50})
    return res.x.reshape(shape)


def test_admm_solves_the_box_qp():
    """Inside the box exactly; its value no worse than L-BFGS-B's after 50 000 iterations
    (to 1e-7 of the value's scale); the projected gradient ~0 (the KKT conditions)."""
    for seed in range(3):
        A, G, B, e, lo, hi = _problem(seed)
        Z, info = solve_box_qp(A, G, B, e, lo, hi, np.zeros_like(B), max_iter=20000, tol=1e-9)
        assert np.all(Z >= lo) and np.all(Z <= hi)
        assert np.all(Z[lo == hi] == 0.0)
        ref = _lbfgsb(A, G, B, e, lo, hi)
        scale = abs(_q(ref, A, G, B, e))
        assert _q(Z, A, G, B, e) <= _q(ref, A, G, B, e) + 1e-7 * scale, info
        assert info["kkt_residual"] < 1e-5, info
        assert info["message"].startswith("converged"), info


def test_admm_without_bounds_is_the_linear_solve():
    """No box: the minimum solves A Θ G + Θ diag(e) = B, here by the Kronecker product
    (G ⊗ A + diag(e) ⊗ I) vec Θ = vec B (column-major vec), a dense solve on its own."""
    rng = np.random.default_rng(7)
    N, n = 5, 6
    A = rng.standard_normal((N, N)); A = A @ A.T + 0.1 * np.eye(N)
    G = rng.standard_normal((n, n)); G = G @ G.T + 0.1 * np.eye(n)
    B = rng.standard_normal((N, n))
    e = np.full(n, 0.05)
    K = np.kron(G, A) + np.kron(np.diag(e), np.eye(N))
    exact = np.linalg.solve(K, B.ravel(order="F")).reshape((N, n), order="F")
    inf = np.full((N, n), np.inf)
    Z, info = solve_box_qp(A, G, B, e, -inf, inf, np.zeros_like(B), max_iter=5000, tol=1e-12)
    assert np.linalg.norm(Z - exact) < 1e-8 * np.linalg.norm(exact), info


@pytest.fixture
def problem():
    """Drift samples of a 2-D system with inputs, and an embedding (as tests/test_gradients.py)."""
    from ddm_numba.matching import DriftData
    rng = np.random.default_rng(3)
    K, N, d, p = 300, 17, 2, 2
    z = rng.uniform(-2, 2, (K, d))
    u = rng.uniform(-1, 1, (K, p))
    f = np.stack([z[:, 0] - z[:, 0] ** 3 + u[:, 0], -z[:, 1] + np.sin(z[:, 0]) + u[:, 1]], 1)
    M = rng.standard_normal((N, d))
    return {"data": DriftData(z, u, f, 1.0 / f.var(0), tau=0.7), "M": M,
            "c": rng.standard_normal(N), "P": np.linalg.pinv(M)}


def test_tube_gram_term_is_the_average_over_displacements(problem):
    """FullGram.set_tube adds σ² Q ∘ S to G's W block: the Monte Carlo average over states and
    displacements q = σ Q ξ (ξ standard normal) of (φ'(h) ∘ q)(φ'(h) ∘ q)ᵀ. 400 draws at each
    of the K states: the entries' Monte Carlo error is ~ (its std)/√(400 K); the tolerance is
    6 standard errors of the largest entry's estimate."""
    from ddm_numba.matching import FullGram
    data, M, c, P = problem["data"], problem["M"], problem["c"], problem["P"]
    gram = FullGram(data, M, c, P, lam_perp=0.3, reg_W=0.01)
    G0 = gram.G.copy()
    sigma, N = 0.2, M.shape[0]
    gram.set_tube(sigma)
    added = gram.G - G0
    assert np.all(added[N:] == 0) and np.all(added[:, N:] == 0)
    rng = np.random.default_rng(3)
    Q = np.eye(N) - M @ np.linalg.pinv(M)
    slope = 1 - np.tanh(data.z @ M.T + c) ** 2
    draws, acc, acc2 = 400, np.zeros((N, N)), np.zeros((N, N))
    for _ in range(draws):
        v = slope * (sigma * rng.standard_normal((len(slope), N)) @ Q)
        outer = v[:, :, None] * v[:, None, :]
        acc += outer.sum(0)
        acc2 += (outer ** 2).sum(0)
    n = draws * len(slope)
    mean = acc / n
    se = np.sqrt(np.maximum(acc2 / n - mean ** 2, 0) / n)
    assert np.max(np.abs(added[:N, :N] - mean)) < 6 * se.max()
    gram.set_tube(0.0)
    assert np.array_equal(gram.G, G0)


def test_gram_quadratic_is_the_loss(problem):
    """FullGram.quadratic's (A, B, e): τ² L(Θ) − q(Θ) is the same constant at any Θ."""
    from ddm_numba.matching import FullGram
    data, M, c, P = problem["data"], problem["M"], problem["c"], problem["P"]
    gram = FullGram(data, M, c, P, lam_perp=0.3, reg_W=0.01)
    gram.set_tube(0.1)
    A, B, e = gram.quadratic()
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(3):
        x = rng.standard_normal(gram.packer.size) * 0.3
        gaps.append(data.tau ** 2 * gram.loss_grad(x)[0] - _q(gram.unflat(x), A, gram.G, B, e))
    assert np.ptp(gaps) < 1e-9 * max(abs(g) for g in gaps)


def test_drift_error_is_the_relative_error_of_the_drift(problem):
    """FullGram.drift_error against the drift computed state by state: τ f_net = P(Θψ − h)
    with ψ = [tanh(h); 1; u], h = M z + c (docs/model.md §3b), Λ-weighted, relative to the
    target's spread."""
    from ddm_numba.matching import FullGram
    data, M, c, P = problem["data"], problem["M"], problem["c"], problem["P"]
    gram = FullGram(data, M, c, P, lam_perp=0.3, reg_W=0.01)
    gram.set_tube(0.5)                   # the tube must not enter the drift error
    rng = np.random.default_rng(1)
    x = rng.standard_normal(gram.packer.size) * 0.2
    Th = gram.unflat(x)
    h = data.z @ M.T + c
    psi = np.hstack([np.tanh(h), np.ones((data.K, 1)), data.u])
    f_net = (psi @ Th.T - h) @ P.T / data.tau
    num = np.mean(np.sum(data.lam * (f_net - data.f) ** 2, 1))
    den = np.mean(np.sum(data.lam * (data.f - data.f.mean(0)) ** 2, 1))
    assert abs(gram.drift_error(x) - np.sqrt(num / den)) < 1e-10 * np.sqrt(num / den)
