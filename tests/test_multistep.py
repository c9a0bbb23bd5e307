"""Multi-step (shooting) loss: discrete-adjoint gradient against finite differences, the RK4
forward map against scipy's solve_ivp, zero loss/gradient on the network's own map, descent
with L-BFGS-B, and input validation."""
import numba
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import minimize

import ddm_numba.learn.multistep as ms
from ddm_numba.errors import DDMError
from ddm_numba.learn.multistep import integrate, multistep_loss_grad

KEYS = ("A", "b_z", "M", "c")


def rel_err(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def random_net(rng, d, N, scale=1.0):
    """A network whose hidden units sit in tanh's nonlinear range (so φ' and φ'' matter)."""
    return {"A": scale * rng.normal(size=(d, N)), "b_z": 0.3 * rng.normal(size=d),
            "M": rng.normal(size=(N, d)), "c": 0.5 * rng.normal(size=N)}


def drift(p, tau):
    def f(t, z):
        return (-z + p["A"] @ np.tanh(p["M"] @ z + p["c"]) + p["b_z"]) / tau
    return f


@pytest.fixture
def small():
    rng = np.random.default_rng(42)
    d, N, B = 2, 7, 5
    p = random_net(rng, d, N)
    return dict(p=p, tau=0.7, z0=rng.normal(size=(B, d)), z_obs=rng.normal(size=(B, d)),
                h=0.15, n=3, lam=np.array([1.0, 2.5]))


def loss_of(s, p, reg):
    return multistep_loss_grad(p["A"], p["b_z"], p["M"], p["c"], s["tau"], s["z0"], s["z_obs"],
                               s["h"], s["n"], s["lam"], reg=reg)


@pytest.mark.parametrize("reg", [0.0, 0.3])
def test_gradient_matches_central_differences(small, reg):
    loss, grad = loss_of(small, small["p"], reg)
    assert set(grad) == set(KEYS)
    eps = 1e-6
    for key in KEYS:
        assert grad[key].shape == small["p"][key].shape
        fd = np.zeros_like(small["p"][key])
        for idx in np.ndindex(fd.shape):
            q = {k: v.copy() for k, v in small["p"].items()}
            q[key][idx] += eps
            lp, _ = loss_of(small, q, reg)
            q[key][idx] -= 2 * eps
            lm, _ = loss_of(small, q, reg)
            fd[idx] = (lp - lm) / (2 * eps)
        assert np.linalg.norm(fd) > 1e-3  # a block with no signal would test nothing
        assert rel_err(grad[key], fd) < 1e-6, key


def test_loss_value_is_the_definition(small):
    """L = (1/B) Σ_b Σ_a Λ_a (z⁽ⁿ⁾ − z_obs)² / Δ² + reg ‖A‖²_F, with z⁽ⁿ⁾ from integrate."""
    p, reg = small["p"], 0.3
    zn = integrate(p["A"], p["b_z"], p["M"], p["c"], small["tau"], small["z0"], small["h"],
                   small["n"])
    delta = small["n"] * small["h"]
    want = np.mean(np.sum(small["lam"] * (zn - small["z_obs"]) ** 2, axis=1)) / delta**2
    want += reg * np.sum(p["A"] ** 2)
    loss, _ = loss_of(small, p, reg)
    assert loss == pytest.approx(want, rel=1e-13)


def test_forward_map_matches_solve_ivp_with_fourth_order():
    rng = np.random.default_rng(1)
    p, tau, T = random_net(rng, 2, 7), 0.5, 1.0
    z0 = rng.normal(size=(4, 2))
    ref = np.array([solve_ivp(drift(p, tau), (0.0, T), z, method="DOP853", rtol=1e-13,
                              atol=1e-14).y[:, -1] for z in z0])

    def err(n):
        zn = integrate(p["A"], p["b_z"], p["M"], p["c"], tau, z0, T / n, n)
        return np.abs(zn - ref).max()

    np.testing.assert_allclose(
        integrate(p["A"], p["b_z"], p["M"], p["c"], tau, z0, T / 640, 640), ref, rtol=1e-10,
        atol=1e-12)
    # global error C h⁴: halving h divides it by 2⁴ = 16 (measured 16.6 at these sizes)
    ratio = err(160) / err(320)
    assert 14.0 < ratio < 19.0, ratio


def test_own_map_gives_zero_loss_and_gradient(small):
    p = small["p"]
    z_obs = integrate(p["A"], p["b_z"], p["M"], p["c"], small["tau"], small["z0"], small["h"],
                      small["n"])
    loss, grad = multistep_loss_grad(p["A"], p["b_z"], p["M"], p["c"], small["tau"], small["z0"],
                                     z_obs, small["h"], small["n"], small["lam"])
    assert loss < 1e-28
    for key in KEYS:
        assert np.abs(grad[key]).max() < 1e-13, key
    # and a perturbed observation gives a clearly nonzero gradient (the zero above means something)
    _, grad = multistep_loss_grad(p["A"], p["b_z"], p["M"], p["c"], small["tau"], small["z0"],
                                  z_obs + 0.01, small["h"], small["n"], small["lam"])
    assert np.abs(grad["A"]).max() > 1e-4


def test_chunking_and_threads_do_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(3)
    d, N, B = 2, 16, 1500  # several blocks of ms.BLOCK pairs
    p = random_net(rng, d, N, scale=0.5)
    z0, z_obs = rng.normal(size=(B, d)), rng.normal(size=(B, d))
    args = (p["A"], p["b_z"], p["M"], p["c"], 1.0, z0, z_obs, 0.1, 4, np.ones(d))
    loss, grad = multistep_loss_grad(*args, reg=0.01)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        loss1, grad1 = multistep_loss_grad(*args, reg=0.01)
    finally:
        numba.set_num_threads(threads)
    assert loss1 == loss  # fixed block order: the same bits on any number of threads
    for key in KEYS:
        assert np.array_equal(grad1[key], grad[key]), key
    monkeypatch.setattr(ms, "CHUNK", 300)  # five chunks, the last one partial
    loss_c, grad_c = multistep_loss_grad(*args, reg=0.01)
    assert loss_c == pytest.approx(loss, rel=1e-12)
    for key in KEYS:
        assert rel_err(grad_c[key], grad[key]) < 1e-12, key


def test_lbfgs_lowers_the_loss_on_pairs_from_another_network():
    rng = np.random.default_rng(7)
    d, N, B, n, h, tau = 2, 8, 300, 5, 0.1, 1.0
    teacher = random_net(rng, d, N, scale=1.5)
    z0 = rng.uniform(-2, 2, size=(B, d))
    z_obs = integrate(teacher["A"], teacher["b_z"], teacher["M"], teacher["c"], tau, z0, h, n)
    student = random_net(rng, d, N, scale=0.3)
    shapes = [student[k].shape for k in KEYS]
    sizes = [int(np.prod(s)) for s in shapes]

    def unflat(x):
        parts = np.split(x, np.cumsum(sizes)[:-1])
        return [q.reshape(s) for q, s in zip(parts, shapes)]

    def fun(x):
        A, b_z, M, c = unflat(x)
        loss, g = multistep_loss_grad(A, b_z, M, c, tau, z0, z_obs, h, n, np.ones(d), reg=1e-4)
        return loss, np.concatenate([g[k].ravel() for k in KEYS])

    x0 = np.concatenate([student[k].ravel() for k in KEYS])
    loss0, g0 = fun(x0)
    # the gradient is a descent direction: a small step along −g lowers the loss
    assert fun(x0 - 1e-3 * g0 / np.linalg.norm(g0))[0] < loss0
    res = minimize(fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": 25})
    assert res.fun < 0.2 * loss0, (loss0, res.fun)


def _good():
    rng = np.random.default_rng(0)
    d, N, B = 2, 5, 3
    p = random_net(rng, d, N)
    return dict(A=p["A"], b_z=p["b_z"], M=p["M"], c=p["c"], tau=1.0, z0=rng.normal(size=(B, d)),
                z_obs=rng.normal(size=(B, d)), h=0.1, n_steps=2, lam=np.ones(d), reg=0.0)


BAD = [
    ("A", np.ones(5), "A must have shape"),
    ("b_z", np.ones(3), "b_z must have shape"),
    ("M", np.ones((2, 5)), "M must have shape"),
    ("c", np.ones(4), "c must have shape"),
    ("z0", np.ones((3, 3)), "z0 must have shape"),
    ("z0", np.ones((0, 2)), "z0 is empty"),
    ("z_obs", np.ones((4, 2)), "z_obs must have shape"),
    ("lam", np.ones(3), "lam must have shape"),
    ("lam", np.array([1.0, -1.0]), "lam must be >= 0"),
    ("A", np.full((2, 5), np.nan), "A contains non-finite"),
    ("M", np.full((5, 2), np.inf), "M contains non-finite"),
    ("z0", np.full((3, 2), np.nan), "z0 contains non-finite"),
    ("z_obs", np.full((3, 2), np.inf), "z_obs contains non-finite"),
    ("c", np.array(["a"] * 5), "c must be a numeric array"),
    ("tau", 0.0, "tau must be a finite number > 0"),
    ("tau", np.nan, "tau must be a finite number > 0"),
    ("h", 0.0, "h must be a finite number > 0"),
    ("h", -0.1, "h must be a finite number > 0"),
    ("h", np.inf, "h must be a finite number > 0"),
    ("n_steps", 0, "n_steps must be an integer >= 1"),
    ("n_steps", 2.5, "n_steps must be an integer >= 1"),
    ("n_steps", True, "n_steps must be an integer >= 1"),
    ("reg", -1.0, "reg must be a finite number >= 0"),
]


@pytest.mark.parametrize("key, value, msg", BAD, ids=[f"{k}-{m}" for k, _, m in BAD])
def test_bad_input_raises(key, value, msg):
    kw = _good()
    kw[key] = value
    with pytest.raises(DDMError, match=msg):
        multistep_loss_grad(**kw)
    if key not in ("z_obs", "lam", "reg"):
        kw.pop("z_obs"), kw.pop("lam"), kw.pop("reg")
        with pytest.raises(DDMError, match=msg):
            integrate(**kw)


def test_good_input_is_accepted_and_divergence_is_reported():
    kw = _good()
    multistep_loss_grad(**kw)
    kw["n_steps"] = np.int64(2)  # numpy integers count as integers
    multistep_loss_grad(**kw)
    # h far beyond RK4's stability limit (h/τ ≈ 2.8) on a stiff decoder: the states overflow
    kw.update(A=1e150 * kw["A"], h=1e3, n_steps=50)
    with np.errstate(all="ignore"), pytest.raises(DDMError, match="diverged"):
        multistep_loss_grad(**kw)
