"""Sampling: reproducibility, input schedules, blow-ups, and the statistics of known systems."""
import math

import numba
import numpy as np
import pytest
import scipy.linalg

from ddm_numba import DDMError, Network, fit, sample_network, sample_pair, sample_target
from ddm_numba.simulate import input_array, parse_input


def test_same_seed_same_paths_whatever_the_thread_count(dw_model):
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = sample_network(dw_model, trials=6, time=5, seed=3, save_neurons=True)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = sample_network(dw_model, trials=6, time=5, seed=3, save_neurons=True)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one.z, many.z) and np.array_equal(one.x, many.x)
    other = sample_network(dw_model, trials=6, time=5, seed=4)
    assert not np.array_equal(one.z, other.z)


def test_full_connectivity_path_equals_low_rank_path(dw_model):
    """A full model with W = M A is the same network: the O(N²) branch of the simulator must give
    the low-rank branch's paths, up to rounding (same seed, same noise)."""
    net = dw_model
    full = Network(net.tau, net.M, net.c, net.b, net.S0, net.R, W=net.M @ net.A, meta=net.meta)
    a = sample_network(net, trials=4, time=3, seed=11, save_neurons=True)
    b = sample_network(full, trials=4, time=3, seed=11, save_neurons=True)
    assert np.max(np.abs(a.x - b.x)) < 1e-9 and np.max(np.abs(a.z - b.z)) < 1e-9


def test_batched_full_kernel_equals_plain_euler_maruyama():
    """Full W steps every trial together (Φ Wᵀ by BLAS, per slab of trials); the reference is
    tests/naive.py's trial-by-trial numpy Euler–Maruyama. Same streams, so the paths agree to
    rounding, with inputs, state-dependent noise, private noise, a record interval, and one trial
    that blows up (found at the same step, and the others unaffected). Three slabs of trials;
    bit-identical on 1 and 2 threads."""
    from naive import euler_maruyama
    from ddm_numba.backends import cpu
    from ddm_numba.backends.arrays import NetworkArrays, PathArrays, RunSettings
    from ddm_numba.rng import make_states

    rng = np.random.default_rng(2)
    N, d, m, p, trials, steps, every = 40, 2, 2, 1, 2 * cpu.FULL_SLAB + 5, 60, 3
    MT = rng.standard_normal((d, N)) / 3
    c = 0.2 * rng.standard_normal(N)
    WT = rng.standard_normal((N, N)) / np.sqrt(N)
    b = 0.1 * rng.standard_normal(N)
    BinT = rng.standard_normal((p, N))
    U = np.zeros((steps + 1, p))
    U[10:30] = 0.5
    S0 = 0.3 * np.eye(d, m)
    R = 0.01 * rng.standard_normal((d, m, N))
    P = np.linalg.pinv(MT.T)
    x0 = rng.standard_normal((trials, N))
    # dt = 3τ: Euler's off-manifold factor is |1 − dt/τ| = 2 a step; trial 3 starts 1e300 times
    # further out, so it overflows after about 25 steps while the others stay finite
    x0[3] *= 1e300

    # the kernels' own arguments: backends.arrays' tuples, Mᵀ, A and P as tuples of rows
    net = NetworkArrays(cpu.rows(MT), c, cpu.rows(np.zeros((d, N))), WT, True, b, BinT, S0, R,
                        True, 0.05, cpu.rows(P), 1.0)
    run_settings = RunSettings(U, 3.0, steps, every, True)

    def run(kernel):
        T = steps // every + 1
        paths = PathArrays(x0.copy(), make_states(trials, 7), np.zeros((trials, T, d)),
                           np.zeros((trials, T, N)), np.zeros(trials, dtype=np.int64))
        kernel(net, run_settings, paths)
        return paths.z_out, paths.x_out, paths.blowup

    plain = net._replace(MT=MT, A=np.zeros((d, N)), P=P)
    z_ref, x_ref, bl_ref = euler_maruyama(WT.T, plain, run_settings, x0.copy(),
                                          make_states(trials, 7))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        z_one, x_one, bl_one = run(cpu._simulate_full)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        z_new, x_new, bl_new = run(cpu._simulate_full)
    finally:
        numba.set_num_threads(before)
    assert bl_ref[3] > 0 and np.array_equal(bl_ref, bl_new) and np.array_equal(bl_new, bl_one)
    ok = np.arange(trials) != 3
    scale = np.max(np.abs(x_ref[ok]))
    assert np.max(np.abs(x_new[ok] - x_ref[ok])) < 1e-12 * scale
    assert np.max(np.abs(z_new[ok] - z_ref[ok])) < 1e-12 * scale
    assert np.array_equal(x_new, x_one, equal_nan=True)
    assert np.array_equal(z_new, z_one, equal_nan=True)


def test_recorded_latent_is_readout_of_neurons(dw_model):
    traj = sample_network(dw_model, trials=3, time=2, seed=0, save_neurons=True, record_every=7)
    assert traj.x.shape == (3, len(traj.t), dw_model.N)
    assert np.allclose(traj.z, dw_model.readout(traj.x), atol=1e-12)
    assert np.allclose(np.diff(traj.t), 7 * dw_model.meta["system"]["dt"])


def test_network_and_target_share_noise(dw_model):
    """With the same seed and no private noise both see the same ξ: paths stay close over a
    short horizon (they drift apart only by the drift error, ~1e-3 here)."""
    net = sample_network(dw_model, trials=4, time=2, seed=5)
    tgt = sample_target(dw_model.meta["system"]["name"], trials=4, time=2, seed=5)
    assert np.max(np.abs(net.z - tgt.z)) < 0.05


def test_sample_pair_is_the_two_samplers_side_by_side(dw_model):
    """Each half of the pair is, bit for bit, what its own sampler gives with the same
    arguments, and the two start together; by default the target is the model's own."""
    kw = dict(trials=3, time=2, seed=7, record_every=3)
    pair = sample_pair(dw_model, **kw, save_neurons=True)
    net = sample_network(dw_model, **kw, save_neurons=True)
    tgt = sample_target(dw_model.meta["system"]["name"], **kw)
    assert pair.network is pair[0] and pair.target is pair[1]
    for a, b in ((pair.network, net), (pair.target, tgt)):
        assert np.array_equal(a.t, b.t) and np.array_equal(a.z, b.z) and a.meta == b.meta
    assert np.array_equal(pair.network.x, net.x)
    # the network records z = P (x0 − c) of x0 = M z0 + c: z0 up to rounding
    assert np.allclose(pair.network.z[:, 0], pair.target.z[:, 0], rtol=0, atol=1e-12)
    # given starts go to both sides; another seed gives other paths
    z0 = np.array([[-1.0, 0.0], [1.0, 0.5], [0.0, -0.5]])[:, : dw_model.d]
    given = sample_pair(dw_model, dw_model.meta["system"]["name"], **dict(kw, seed=8), z0=z0)
    assert np.allclose(given.network.z[:, 0], z0, rtol=0, atol=1e-12)
    assert np.array_equal(given.target.z[:, 0], z0)
    assert not np.array_equal(given.target.z, pair.target.z)


def test_blowup_is_reported_with_trial_and_time(dw_model):
    # The network's drift is bounded (tanh), so it could blow up only through the Euler
    # instability of the leak (dt > τ: the off-manifold part grows by |1 − dt/τ| a step); such a
    # step is refused up front (the kernels' own blow-up record is tested below, with x0 = 1e300).
    with pytest.raises(DDMError, match="longer than the neurons' time constant"):
        sample_network(dw_model, trials=2, time=6000, dt=3.0, record_every=1)
    with pytest.raises(DDMError, match=r"trial \d+ (became non-finite|diverged).*smaller --dt"):
        sample_target("double_well", trials=2, time=50, dt=3.0, record_every=1)


def test_input_schedule_parsing():
    t0, t1, u = parse_input("1.5:3:1,-2", 2)
    assert (t0, t1) == (1.5, 3.0) and np.array_equal(u, [1, -2])
    for bad in ("1:2", "a:2:1,1", "3:1:1,1", "0:1:1", "0:1:nan,1"):
        with pytest.raises(DDMError, match="--input"):
            parse_input(bad, 2)
    U = input_array([(0.1, 0.3, np.array([1.0]))], 1, 5, 0.1)
    assert U[:, 0].tolist() == [0, 1, 1, 0, 0]
    with pytest.raises(DDMError, match="overlap"):
        input_array([(0, 1, np.ones(1)), (0.5, 2, np.ones(1))], 1, 30, 0.1)


def test_inputs_move_the_network_between_memories(mw_model):
    """multiwell: while the input u = (−2, 2) is on, z − z³ + u has one stable point,
    (−1.52, 1.52): every trial goes there. After it is switched off the trials relax to the
    (−1, 1) memory; barrier crossings (Kramers rate ≈ 0.004 per unit time) are rare in 1 unit."""
    traj = sample_network(mw_model, trials=16, time=6, seed=2, inputs=["0:5:-2,2"])
    on = traj.z[:, np.searchsorted(traj.t, 4.9)]
    assert np.all(np.abs(on - [-1.52, 1.52]) < 0.5)
    assert np.array_equal(traj.u[np.searchsorted(traj.t, 5.5)], [0.0, 0.0])
    end = traj.z[:, -1]
    assert np.sum((end[:, 0] < 0) & (end[:, 1] > 0)) >= 15


def test_ou2d_stationary_covariance():
    """The network's stationary covariance equals the exact one of the Euler–Maruyama chain.

    For z' = F z + σ√dt ξ, F = I − B dt, the stationary covariance solves S = F S Fᵀ + σ² dt I
    exactly. Trials are independent, so each trial's time-averaged z zᵀ is one i.i.d. estimate:
    the tolerance is 5 standard errors of their mean, plus the drift-fit error (~1e-4).
    """
    net = fit("ou2d", 64, seed=1, max_iter=20, progress=None)
    dt = 0.02
    traj = sample_network(net, trials=64, time=60, seed=7, dt=dt)
    zs = traj.z[:, traj.t >= 5.0]
    per_trial = np.einsum("kta,ktb->kab", zs, zs) / zs.shape[1]
    mean = per_trial.mean(0)
    se = per_trial.std(0, ddof=1) / math.sqrt(per_trial.shape[0])
    B = np.array([[1.0, -2.0], [2.0, 1.0]])
    S = scipy.linalg.solve_discrete_lyapunov(np.eye(2) - B * dt, dt * np.eye(2))
    assert np.all(np.abs(mean - S) < 5 * se + 2e-3)


def _lowrank_case(N, seed=3, R_scale=0.02, sigma_p=0.05, p=2, d=2):
    from ddm_numba.backends.arrays import NetworkArrays
    rng = np.random.default_rng(seed)
    m = d
    MT = rng.standard_normal((d, N)) / np.sqrt(N)
    A = rng.standard_normal((d, N)) * 2 / np.sqrt(N)
    c = 0.3 * rng.standard_normal(N)
    b = MT.T @ rng.standard_normal(d) + c
    P = np.linalg.pinv(MT.T)
    net = NetworkArrays(MT, c, A, np.zeros((1, 1)), False, b, rng.standard_normal((p, N)),
                        0.4 * np.eye(d, m), R_scale * rng.standard_normal((d, m, N)),
                        R_scale > 0, sigma_p, P, 0.7)
    return net, rng


# d is in the sampler's types (its loops over d unroll), so each d is a compilation of ~20 s:
# d = 2 (which the fits of the default tier compile anyway) here, d = 3 in the slow tier
@pytest.mark.parametrize("d", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_low_rank_sampler_equals_plain_euler_maruyama(d):
    """The low-rank sampler (two passes a step: the update, then φ̃ with the next step's sums)
    against tests/naive.py's numpy Euler–Maruyama with W = M A: N = 601, odd, so the private
    normals end on half a pair; inputs switching on and off, state-dependent noise, private
    noise, a record every 3 steps, and one trial that overflows."""
    from naive import euler_maruyama
    from ddm_numba.backends import cpu
    from ddm_numba.backends.arrays import PathArrays, RunSettings
    from ddm_numba.rng import make_states

    N, trials, steps, every = 601, 5, 40, 3
    net, rng = _lowrank_case(N, d=d)
    U = np.zeros((steps + 1, 2))
    U[5:20, 0], U[12:30, 1] = 0.7, -0.4
    # dt = 3τ: Euler's factor |1 − dt/τ| = 2 a step (as in the full test), so trial 2, started
    # 1e300 times further out, overflows after about 25 steps while the others stay finite
    run = RunSettings(U, 3 * net.tau, steps, every, True)
    x0 = (net.MT.T @ rng.standard_normal((d, trials))).T + net.c
    x0[2] *= 1e300
    T = steps // every + 1
    paths = PathArrays(x0.copy(), make_states(trials, 9), np.zeros((trials, T, d)),
                       np.zeros((trials, T, N)), np.zeros(trials, dtype=np.int64))
    cpu.simulate_network(net, run, paths)
    z_ref, x_ref, bl_ref = euler_maruyama(net.MT.T @ net.A, net, run, x0.copy(),
                                          make_states(trials, 9))
    assert np.array_equal(paths.blowup, bl_ref) and bl_ref[2] > 0 and bl_ref[0] == -1
    ok = np.arange(trials) != 2
    scale = np.max(np.abs(x_ref[ok]))
    assert np.max(np.abs(paths.x_out[ok] - x_ref[ok])) < 1e-12 * scale
    assert np.max(np.abs(paths.z_out[ok] - z_ref[ok])) < 1e-12 * scale


def test_sampler_phi_changes_paths_by_less_than_its_error_bound():
    """φ̃ in place of tanh, same noise: how far apart do the paths drift? Each step the drift
    moves by at most δ = PHI_EM_ERROR · ‖A‖₁ (per unit of dt/τ), so after n steps of a contracting
    flow the gap is at most n (dt/τ) δ (here 9e-4, 5e-4 of the paths' scale); φ̃'s error changes
    sign 8 times on [0, 7], so along a path it mostly cancels. Here 2000 steps of a tanh network,
    noisy: the gap between the sampler's paths and numpy's with exact tanh stays below 1e-6 of the
    paths' scale (measured 1.4e-7), where the noise's own increments are ~1e-1 a step: no
    statistic of a sample can see it. The same run with tanh + 1e-5 sin(3x) in numpy gives
    7.4e-6 and would fail; the gap grows in proportion to φ's error (1e-4: 7.4e-5)."""
    from naive import euler_maruyama
    import naive
    from ddm_numba.backends import cpu
    from ddm_numba.backends.arrays import PathArrays, RunSettings
    from ddm_numba.rng import make_states

    N, trials, steps = 300, 3, 2000
    net, rng = _lowrank_case(N, seed=5, R_scale=0.0, sigma_p=0.0, p=0)
    run = RunSettings(np.zeros((steps + 1, 0)), 0.01, steps, 50, False)
    x0 = (net.MT.T @ rng.standard_normal((2, trials))).T + net.c
    paths = PathArrays(x0.copy(), make_states(trials, 1), np.zeros((trials, steps // 50 + 1, 2)),
                       np.zeros((1, 1, 1)), np.zeros(trials, dtype=np.int64))
    cpu.simulate_network(net, run, paths)
    original = naive.phi_em
    try:
        naive.phi_em = np.tanh
        z_tanh, _, _ = euler_maruyama(net.MT.T @ net.A, net, run, x0.copy(), make_states(trials, 1))
    finally:
        naive.phi_em = original
    gap = np.max(np.abs(paths.z_out - z_tanh)) / np.max(np.abs(z_tanh))
    assert 0 < gap < 1e-6, gap


def test_a_shard_of_trials_equals_the_same_rows_of_one_run(dw_model):
    """Trials [a, b) sampled with first_trial = a equal rows a … b − 1 of one run, bit for bit:
    starts drawn from the box (each from its own trial's stream), noise, records, neurons; for
    the network, the target and the pair (issue 14: shards of a run anywhere)."""
    kw = dict(time=2.0, seed=11, progress=None)
    whole = sample_network(dw_model, trials=9, save_neurons=True, **kw)
    part = sample_network(dw_model, trials=4, first_trial=3, save_neurons=True, **kw)
    assert np.array_equal(part.z, whole.z[3:7]) and np.array_equal(part.x, whole.x[3:7])
    assert part.meta["first_trial"] == 3 and whole.meta["first_trial"] == 0
    target = sample_target("double_well", trials=9, **kw)
    target_part = sample_target("double_well", trials=2, first_trial=7, **kw)
    assert np.array_equal(target_part.z, target.z[7:9])
    pair = sample_pair(dw_model, trials=3, first_trial=6, **kw)
    assert np.array_equal(pair.network.z, whole.z[6:9])
    # the shards differ from each other (the streams moved on): not a constant
    assert not np.array_equal(part.z[0], part.z[1])


@pytest.mark.parametrize("bad", [-1, 1.5, "3"])
def test_first_trial_must_be_a_whole_number_at_least_zero(dw_model, bad):
    with pytest.raises(DDMError, match="first_trial"):
        sample_network(dw_model, trials=2, time=0.1, first_trial=bad, progress=None)
