"""Backend parity: the CUDA simulation kernels against cpu.simulate_network, under the simulator.

The CUDA twin must give the CPU's paths for the same seed (same xoroshiro128+ stream per trial,
same draw order), to rounding in float64 and to float32 rounding in float32, report blow-ups the
same way and leave the random states where the CPU leaves them (docs/model.md §6–7).

No GPU is needed: the kernels run in numba's CUDA simulator (see conftest.py here for how this
folder is run).
"""
import zlib

import numpy as np
import pytest

from ddm_numba.backends import cpu, cuda_simulate
from ddm_numba.backends.arrays import NetworkArrays, PathArrays, RunSettings
from ddm_numba.errors import DDMError
from ddm_numba.rng import make_states

# numpy scalars in the simulator: uint64 wrap-around in xoroshiro (intended), and overflow /
# inf − inf in the blow-up case; a short GIL switch interval for speed (conftest.py)
pytestmark = [pytest.mark.filterwarnings("ignore::RuntimeWarning"),
              pytest.mark.usefixtures("short_switch_interval")]


def _network(g, N, d, m, p, R_scale):
    """Random parameters of a network (docs/model.md §2–3): M, c, A, W, b, B_in, S0, R, P."""
    M = g.normal(size=(N, d))
    return dict(M=M, c=0.3 * g.normal(size=N), A=g.normal(size=(d, N)) / np.sqrt(N),
                W=g.normal(size=(N, N)) / np.sqrt(N), b=0.2 * g.normal(size=N),
                B_in=g.normal(size=(N, p)), S0=0.5 * g.normal(size=(d, m)),
                R=R_scale * g.normal(size=(d, m, N)), P=np.linalg.solve(M.T @ M, M.T))


def _simulate(backend, net, x0, U, full, sigma_p, dt, tau, n_steps, every, seed, **options):
    """Call a backend's simulate_network as simulate.sample_network calls the CPU one."""
    trials, N = x0.shape
    x0 = x0.copy()   # the kernels leave the final states in x0
    d, p = net["M"].shape[1], net["B_in"].shape[1]
    T = n_steps // every + 1
    arrays = NetworkArrays(
        np.ascontiguousarray(net["M"].T), net["c"], net["A"] if not full else np.zeros((d, N)),
        np.ascontiguousarray(net["W"].T) if full else np.zeros((1, 1)), full, net["b"],
        np.ascontiguousarray(net["B_in"].T) if p else np.zeros((0, N)), net["S0"], net["R"],
        bool(np.any(net["R"] != 0)), sigma_p, net["P"], tau)
    run = RunSettings(U, dt, n_steps, every, True)
    paths = PathArrays(x0, make_states(trials, seed), np.zeros((trials, T, d)),
                       np.zeros((trials, T, N)), np.full(trials, -1, dtype=np.int64))
    backend.simulate_network(arrays, run, paths, **options)
    return paths.z_out, paths.x_out, paths.blowup, paths.states


def _max_rel_diff(a, b):
    """max |a − b| / max(1, |b|) over entries finite in both; inf if they are non-finite in
    different places."""
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(fa, fb):
        return float("inf")
    if not fa.any():
        return 0.0
    return float(np.max(np.abs(a[fa] - b[fa]) / np.maximum(1.0, np.abs(b[fa]))))


def _compare(name, N=8, d=2, m=2, p=2, trials=3, n_steps=15, every=3, full=False, sigma_p=0.1,
             R_scale=0.2, dtype=np.float64, tpb=4, dt=0.05, tau=1.0, x0_scale=None):
    """Run one case on both backends with the same seed; return the differences."""
    g = np.random.default_rng(zlib.crc32(name.encode()))
    net = _network(g, N, d, m, p, R_scale)
    U = g.normal(size=(n_steps + 1, p))
    U[::4] = 0.0                                  # some steps without input (the u = 0 branch)
    x0 = np.ascontiguousarray((net["M"] @ g.normal(size=(d, trials))).T + net["c"])
    if x0_scale is not None:
        x0 *= np.asarray(x0_scale)[:, None]
    common = dict(net=net, x0=x0, U=U, full=full, sigma_p=sigma_p, dt=dt, tau=tau,
                  n_steps=n_steps, every=every, seed=7)
    zc, xc, bc, sc = _simulate(cpu, **common)
    zg, xg, bg, sg = _simulate(cuda_simulate, dtype=dtype, threads_per_block=tpb, **common)
    return {"z": _max_rel_diff(zg, zc), "x": _max_rel_diff(xg, xc),
            "blowup_cpu": bc.tolist(), "blowup_cuda": bg.tolist(),
            "states_equal": bool(np.array_equal(sc, sg)), "z_scale": float(np.nanmax(np.abs(zc)))}


CASES = {
    # low-rank: structured + private noise, two inputs, state-dependent noise; 4 threads stride
    # over 8 neurons
    "lowrank": dict(),
    # odd N and m (dropped second normals), no inputs, more threads than neurons
    "lowrank_odd": dict(N=7, d=3, m=3, p=0, tpb=8, sigma_p=0.2),
    # full W: two φ tiles of 4
    "full": dict(full=True),
    # full W, no R (the branch with no reduction before η), a partial last tile
    "full_noR": dict(full=True, N=5, tpb=2, R_scale=0.0),
    "lowrank_f32": dict(dtype=np.float32),
    "full_f32": dict(full=True, dtype=np.float32),
    # blow-up: x grows ×99 a step (dt/τ = 100); trial 0 stays finite, trials 1 and 2 overflow
    # at different steps; every = 2, so detection waits for a record, as on the CPU
    "blowup": dict(dt=0.1, tau=1e-3, every=2, x0_scale=[1.0, 1e290, 1e300], sigma_p=0.0),
}


@pytest.mark.parametrize("case", ["lowrank", "lowrank_odd", "full", "full_noR"])
def test_float64_paths_equal_cpu(case):
    r = _compare(case, **CASES[case])
    assert r["z"] < 1e-10 and r["x"] < 1e-10, r
    assert r["states_equal"], "the random states must be advanced exactly as on the CPU"
    assert r["blowup_cuda"] == r["blowup_cpu"] == [-1, -1, -1]
    assert r["z_scale"] > 0.1                      # the comparison compared something


@pytest.mark.parametrize("case", ["lowrank_f32", "full_f32"])
def test_float32_paths_follow_cpu(case):
    r = _compare(case, **CASES[case])
    # float32 rounding (~6e-8 relative) amplified over 15 steps; measured ~1e-7
    assert r["z"] < 1e-4 and r["x"] < 1e-4, r
    assert r["states_equal"]


def test_float32_statistics_within_monte_carlo_error():
    """float32 on the GPU against float64 on the CPU with DIFFERENT seeds: the mean and variance
    of z at the last record across trials must agree within Monte Carlo error."""
    trials, N, d, m, n_steps = 96, 4, 2, 2, 50
    g = np.random.default_rng(3)
    net = _network(g, N, d, m, 1, 0.2)
    U = np.ones((n_steps + 1, 1))
    x0 = np.ascontiguousarray(np.tile(net["c"], (trials, 1)))
    common = dict(net=net, x0=x0, U=U, full=False, sigma_p=0.1, dt=0.05, tau=0.5,
                  n_steps=n_steps, every=10)
    zc = _simulate(cpu, seed=1, **common)[0][:, -1]
    zg = _simulate(cuda_simulate, seed=2, dtype=np.float32, threads_per_block=1, **common)[0][:, -1]
    vc, vg = zc.var(axis=0, ddof=1), zg.var(axis=0, ddof=1)
    se_mean = np.sqrt((vc + vg) / trials)          # standard error of the difference of means
    se_var = np.sqrt(2.0 / (trials - 1)) * np.sqrt(vc**2 + vg**2)   # ... of variances (normal)
    r = {"mean_z": float(np.max(np.abs(zc.mean(0) - zg.mean(0)) / se_mean)),
         "var_z": float(np.max(np.abs(vc - vg) / se_var)), "sd": float(np.sqrt(vc).max())}
    assert r["mean_z"] < 4 and r["var_z"] < 4, r  # in standard errors
    assert r["sd"] > 0.01                          # the noise did something


def test_blowup_reported_like_cpu():
    r = _compare("blowup", **CASES["blowup"])
    assert r["blowup_cuda"] == r["blowup_cpu"], r
    assert r["blowup_cpu"][0] == -1 and 0 < r["blowup_cpu"][2] < r["blowup_cpu"][1], r
    assert all(s % 2 == 0 for s in r["blowup_cpu"][1:])  # found at a record step
    # recorded values equal up to the blow-up (non-finite in the same places, the rest ~equal)
    assert r["z"] < 1e-10 and r["x"] < 1e-10, r
    assert r["states_equal"]


def test_models_beyond_the_kernels_limits_are_refused():
    """The host wrapper's refusals, one per bad call."""
    g = np.random.default_rng(0)
    errors = {}
    for label, d, dtype, tpb in [("d", cuda_simulate.MAX_D + 1, np.float64, 4),
                                 ("dtype", 2, np.float16, 4), ("tpb", 2, np.float64, 3)]:
        net = _network(g, 12, d, 1, 0, 0.0)
        with pytest.raises(DDMError) as exc:
            _simulate(cuda_simulate, net, np.zeros((2, 12)), np.zeros((3, 0)), False, 0.0, 0.1, 1.0,
                      2, 1, 0, dtype=dtype, threads_per_block=tpb)
        errors[label] = str(exc.value)
    assert "use the CPU backend" in errors["d"]
    assert "float64 or float32" in errors["dtype"]
    assert "power of two" in errors["tpb"]
