"""Every hand-derived gradient block against central finite differences (relative error < 1e-6)."""
import numpy as np
import pytest

from ddm_numba.matching import (DriftData, FullGram, Packer, diffusion_loss_grad,
                                lowrank_loss_grad, lowrank_packer)
from ddm_numba.network import Network

from conftest import rel_err
from naive import full_loss_grad_samples


def finite_difference(fun, x, step=1e-6):
    g = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = step * max(1.0, abs(x[i]))
        g[i] = (fun(x + e) - fun(x - e)) / (2 * e[i])
    return g


def check_blocks(fun_grad, packer, x, tol=1e-6):
    _, grad = fun_grad(x)
    fd = finite_difference(lambda y: fun_grad(y)[0], x)
    for name, sl in packer.slices.items():
        if sl.stop > sl.start:
            assert rel_err(grad[sl], fd[sl]) < tol, name


@pytest.fixture
def problem():
    rng = np.random.default_rng(3)
    K, N, d, p = 300, 17, 2, 2  # K not a multiple of the kernel's block: the tail block counts
    z = rng.uniform(-2, 2, (K, d))
    u = rng.uniform(-1, 1, (K, p))
    f = np.stack([z[:, 0] - z[:, 0] ** 3 + u[:, 0], -z[:, 1] + np.sin(z[:, 0]) + u[:, 1]], 1)
    data = DriftData(z, u, f, 1.0 / f.var(0), tau=0.7)
    M = rng.standard_normal((N, d))
    c = rng.standard_normal(N)
    return rng, data, M, c


def test_lowrank_drift_gradient_all_blocks(problem):
    rng, data, M, c = problem
    N, d = M.shape
    packer = lowrank_packer(N, d, data.p)
    x = packer.pack({"A": rng.standard_normal((d, N)), "b_z": rng.standard_normal(d),
                     "B_z": rng.standard_normal((d, data.p)), "M": M, "c": c})
    check_blocks(lambda y: lowrank_loss_grad(y, packer, data, reg_A=0.01), packer, x)


def test_lowrank_drift_gradient_fixed_embedding(problem):
    rng, data, M, c = problem
    N, d = M.shape
    packer = lowrank_packer(N, d, data.p, train_embedding=False)
    x = packer.pack({"A": rng.standard_normal((d, N)), "b_z": rng.standard_normal(d),
                     "B_z": rng.standard_normal((d, data.p))})
    check_blocks(lambda y: lowrank_loss_grad(y, packer, data, 0.0, fixed={"M": M, "c": c}),
                 packer, x)


def test_lowrank_loss_matches_network_drift(problem):
    """The kernel's loss equals the loss computed from Network.latent_drift (numpy, math.tanh)."""
    rng, data, M, c = problem
    N, d = M.shape
    A, bz, Bz = rng.standard_normal((d, N)), rng.standard_normal(d), rng.standard_normal((d, 2))
    net = Network(data.tau, M, c, M @ bz + c, np.eye(d), np.zeros((d, d, N)), A=A, B_in=M @ Bz)
    r = net.latent_drift(data.z, data.u) - data.f
    expected = np.mean(np.sum(data.lam * r ** 2, axis=1))
    packer = lowrank_packer(N, d, data.p)
    loss, _ = lowrank_loss_grad(packer.pack({"A": A, "b_z": bz, "B_z": Bz, "M": M, "c": c}),
                                packer, data, 0.0)
    assert abs(loss - expected) < 1e-12 * expected


def _full_setup(problem):
    rng, data, M, c = problem
    N = M.shape[0]
    net = Network(data.tau, M, c, c, np.eye(2), np.zeros((2, 2, N)), W=np.eye(N))
    W = rng.standard_normal((N, N)) / np.sqrt(N)
    b = rng.standard_normal(N)
    B_in = rng.standard_normal((N, data.p))
    return rng, data, M, c, net, W, b, B_in


def test_full_gram_equals_per_sample_kernel(problem):
    rng, data, M, c, net, W, b, B_in = _full_setup(problem)
    lam_perp = 0.3
    Q = np.eye(M.shape[0]) - M @ net.P        # the reference kernel takes Q dense
    loss_s, gWT, gb, gBT = full_loss_grad_samples(data, W, b, B_in, M, c, net.P, Q, lam_perp)
    gram = FullGram(data, M, c, net.P, lam_perp, reg_W=0.0)
    loss_g, grad = gram.loss_grad(gram.packer.pack({"W": W, "b": b, "B_in": B_in}))
    g = gram.packer.unpack(grad)
    assert abs(loss_g - loss_s) < 1e-10 * loss_s
    assert rel_err(g["W"], gWT.T) < 1e-10
    assert rel_err(g["b"], gb) < 1e-10
    assert rel_err(g["B_in"], gBT.T) < 1e-10
    # and the loss is what its definition says, from the network's own numpy drift
    full = Network(data.tau, M, c, b, np.eye(2), np.zeros((2, 2, len(c))), W=W, B_in=B_in)
    r = full.latent_drift(data.z, data.u) - data.f
    Fp = full.off_manifold_drift(data.z, data.u)
    expected = np.mean(np.sum(data.lam * r ** 2, 1) + lam_perp * np.sum(Fp ** 2, 1))
    assert abs(loss_s - expected) < 1e-10 * expected


def test_project_off_is_the_dense_projector(problem):
    """Network.project_off equals Q = I − M P applied densely, from either side (M is not
    orthonormal here, so the side would show if Q were not symmetric), and kills the manifold."""
    rng, data, M, c, net, W, b, B_in = _full_setup(problem)
    Q = np.eye(M.shape[0]) - M @ net.P
    X = rng.standard_normal((5, M.shape[0]))
    assert rel_err(net.project_off(X), (Q @ X.T).T) < 1e-13
    assert rel_err(net.project_off(X), X @ Q) < 1e-13
    assert rel_err(net.project_off(X[0]), Q @ X[0]) < 1e-13
    assert np.max(np.abs(net.project_off(rng.standard_normal((3, 2)) @ M.T))) < 1e-12
    assert np.max(np.abs(net.project_off(X) @ net.P.T)) < 1e-12


def test_full_gradient_finite_differences(problem):
    rng, data, M, c, net, W, b, B_in = _full_setup(problem)
    gram = FullGram(data, M, c, net.P, lam_perp=0.3, reg_W=0.01)
    x = gram.packer.pack({"W": W, "b": b, "B_in": B_in})
    check_blocks(gram.loss_grad, gram.packer, x)


def test_diffusion_gradient(problem):
    rng, data, M, c = problem
    N, d = M.shape
    m = 3
    packer = Packer({"S0": (d, m), "R": (d, m, N)})
    g = rng.standard_normal((data.K, d, m))
    Dt = np.ascontiguousarray(np.einsum("kam,kbm->kab", g, g))
    P = np.linalg.pinv(M)
    x = packer.pack({"S0": rng.standard_normal((d, m)), "R": 0.3 * rng.standard_normal((d, m, N))})
    check_blocks(lambda y: diffusion_loss_grad(y, packer, data.z, Dt, M, c, 0.04 * P @ P.T, 0.01),
                 packer, x)


def test_masked_full_gradient_finite_differences(problem):
    """With a mask the loss is a function of the allowed W_ij only (the others are held at 0):
    its gradient equals finite differences on the allowed entries and is 0 on the others."""
    from ddm_numba.masks import make_mask
    rng, data, M, c, net, W, b, B_in = _full_setup(problem)
    N = M.shape[0]
    mask, info = make_mask("random:p=0.3", N, seed=2)
    assert 0.1 < info["density"] < 0.5
    W = np.where(mask, W, 0.0)
    gram = FullGram(data, M, c, net.P, lam_perp=0.3, reg_W=0.01, mask=mask)
    x = gram.packer.pack({"W": W, "b": b, "B_in": B_in})
    _, grad = gram.loss_grad(x)
    fd = finite_difference(lambda y: gram.loss_grad(y)[0], x)
    gW, fdW = (gram.packer.unpack(v)["W"] for v in (grad, fd))
    assert rel_err(gW[mask], fdW[mask]) < 1e-6
    assert np.all(gW[~mask] == 0) and np.any(fdW[~mask] != 0)   # the mask did something
    for name in ("b", "B_in"):
        assert rel_err(gram.packer.unpack(grad)[name], gram.packer.unpack(fd)[name]) < 1e-6
