"""Memory that follows the problem, not the data (issue: lean memory).

Every function that evaluates the features φ(M z + c) on K states works in row blocks
(ddm_numba/blocks.py), so none of them holds a K×N array. The tests measure the peak of traced
memory (tracemalloc: numpy reports its allocations to it) during a call on K states of an
N-neuron network, with the block size cut to 2¹⁴ elements so that the blocks themselves weigh
nothing, and require it to stay below a quarter of ONE K×N float64 array. The expressions they
replace made two or three K×N temporaries at once (z Mᵀ, + c, tanh), 8–12× the bound, so any
unblocked expression that comes back fails here. The values are checked against the plain
formulas on a few states.
"""
import tracemalloc

import numpy as np
import pytest

from ddm_numba import blocks
from ddm_numba.analysis.connectivity import LatentField, epr_split_ensemble
from ddm_numba.learn import fit as learn_fit
from ddm_numba.network import Network

K, N, d = 60000, 256, 2
KN_BYTES = K * N * 8                    # one K×N float64 array: 123 MB


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 1 << 14)


def _net(full=False, inputs=False, seed=0):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(N, d))
    A = rng.normal(size=(d, N)) / N
    c = rng.normal(size=N) * 0.3
    b_z = rng.normal(size=d)
    kw = {"W": M @ A + 0.01 * rng.normal(size=(N, N)) / np.sqrt(N)} if full else {"A": A}
    if inputs:
        kw["B_in"] = rng.normal(size=(N, 3))
    return Network(1.3, M, c, M @ b_z + c, 0.5 * np.eye(d), 0.1 * rng.normal(size=(d, d, N)),
                   **kw)


def _peak(fn, *args):
    """The peak of traced memory during fn(*args), above what was traced before the call, with
    the result's own size subtracted (an output of K×d is not an intermediate)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn(*args)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak - sum(np.asarray(o).nbytes for o in (out if isinstance(out, tuple) else (out,)))


@pytest.fixture(scope="module")
def states():
    return np.random.default_rng(1).normal(size=(K, d))


@pytest.mark.parametrize("full", [False, True])
def test_network_fields_are_blocked_and_exact(small_blocks, states, full):
    net = _net(full=full, inputs=True)
    u = np.random.default_rng(2).normal(size=(K, 3))
    for name, fn, args in (("latent_drift", net.latent_drift, (states,)),
                           ("latent_drift with inputs", net.latent_drift, (states, u)),
                           ("noise_S", net.noise_S, (states,)),
                           ("latent_diffusion", net.latent_diffusion, (states,))):
        peak = _peak(fn, *args)
        assert peak < KN_BYTES / 4, f"{name}: {peak / 1e6:.0f} MB traced (one K×N is " \
                                    f"{KN_BYTES / 1e6:.0f} MB)"
    # the blocked forms against the definitions: f = P F(M z + c), S = S0 + R φ
    z, uu = states[:500], u[:500]
    for ui, ufull in ((None, None), (uu[0], uu[0]), (uu, uu)):
        want = net.full_drift(net.embed(z), ufull) @ net.P.T
        np.testing.assert_allclose(net.latent_drift(z, ui), want, rtol=1e-10, atol=1e-12)
    phi = np.tanh(net.embed(z))
    S = net.S0[None] + np.einsum("abj,kj->kab", net.R, phi)
    np.testing.assert_allclose(net.noise_S(z), S, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(net.latent_diffusion(z), np.einsum("kam,kbm->kab", S, S),
                               rtol=1e-12, atol=1e-14)
    # leading dimensions other than one (a grid, trials × time) keep their shape
    assert net.latent_drift(states[:600].reshape(20, 30, d)).shape == (20, 30, d)
    assert net.latent_diffusion(states[:600].reshape(20, 30, d)).shape == (20, 30, d, d)


def test_latent_fields_of_the_parts_are_blocked_and_exact(small_blocks, states):
    net = _net()
    for part in ("W", "W_s", "W_a"):
        field = LatentField(net, part)
        for name in ("drift", "jacobian", "divergence"):
            peak = _peak(getattr(field, name), states)
            assert peak < KN_BYTES / 4, f"{part}.{name}: {peak / 1e6:.0f} MB traced"
        # against the plain formulas on a few states (drift f = (1/τ)[G φ (+ affine)], J, ∇·f)
        z = states[:300]
        h = net.embed(z)
        dp = 1 - np.tanh(h) ** 2
        J = np.einsum("aj,kj,jb->kab", field.G, dp, net.M)
        if field.affine:
            J = J - np.eye(d)
        np.testing.assert_allclose(field.jacobian(z), J / net.tau, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(field.divergence(z), np.trace(J, axis1=1, axis2=2) / net.tau,
                                   rtol=1e-10, atol=1e-12)
    peak = _peak(epr_split_ensemble, net, states, np.eye(d))
    assert peak < KN_BYTES / 4, f"epr_split_ensemble: {peak / 1e6:.0f} MB traced"


def test_learning_helpers_are_blocked(small_blocks, states):
    net = _net()
    A, b_z, M, c, tau = net.A, net.b_z, net.M, net.c, net.tau
    Y = np.random.default_rng(3).normal(size=(K, d))
    for name, fn, args in (
            ("_drift", learn_fit._drift, (A, b_z, M, c, tau, states)),
            ("_generator_of_drift", learn_fit._generator_of_drift,
             (A, b_z, M, c, tau, states, np.eye(d))),
            ("_cross", learn_fit._cross, (M, c, states, Y))):
        peak = _peak(fn, *args)
        assert peak < KN_BYTES / 4, f"{name}: {peak / 1e6:.0f} MB traced"
    np.testing.assert_allclose(learn_fit._drift(A, b_z, M, c, tau, states[:400]),
                               net.latent_drift(states[:400]), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_fit_data_memory_follows_the_network_not_the_data(monkeypatch):
    """The whole fit from data (weights, Itô correction, refinement, state noise, figures) on
    2·10⁵ increments at N = 512: traced peak under a quarter of one K×N array (819 MB), where
    the unblocked code held several (the README snippet peaked at 6.9 GB of RSS)."""
    from ddm_numba import fit_data, sample_target
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 1 << 16)
    data = sample_target("ou2d", trials=20, time=100, seed=5, record_every=1, progress=None)
    n, Kd = 512, data.z.shape[0] * (data.z.shape[1] - 1)
    peak = _peak(lambda: fit_data(data, neurons=n, gain=0.0625, state_noise=True, substeps=1,
                                  refine_iter=2, refine_pairs=20000, progress=None))
    assert peak < Kd * n * 8 / 4, f"{peak / 1e6:.0f} MB traced for {Kd} increments"


@pytest.mark.slow
def test_stats_of_many_trials_in_bounded_memory(tmp_path, dw_model):
    """`ddm sample --stats` of 2·10⁵ trials recorded every step (1001 records of d = 1): the
    paths would take 1.6 GB; the whole process peaks below 1 GiB (a fresh process; its peak
    resident set from os.wait4)."""
    import json
    import os
    import subprocess
    import sys
    model = tmp_path / "m.npz"
    dw_model.save(model)
    trials, steps = 200_000, 1000
    paths_bytes = trials * (steps + 1) * 8
    assert paths_bytes > 1.5e9
    proc = subprocess.Popen([sys.executable, "-m", "ddm_numba_cli.main", "sample", str(model),
                             "--stats", str(tmp_path / "s.json"), "--trials", str(trials),
                             "--time", str(steps * 0.01), "--dt", "0.01", "--record-every", "1",
                             "--shard", "10000", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.communicate()
    assert os.waitstatus_to_exitcode(status) == 0, err[-2000:]
    peak = usage.ru_maxrss * 1024
    assert peak < 2**30, f"peak {peak / 2**30:.2f} GiB"
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["trials"] == trials
