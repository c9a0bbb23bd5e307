"""Learning from observed trajectories: validation of the data, recovery of known systems."""
import numpy as np
import pytest

from ddm_numba import DDMError, Trajectories, sample_network, sample_target
from ddm_numba.learn import Observations, fit_data


@pytest.fixture(scope="module")
def ou_data():
    """ou2d, 100 trials × 100 time units at Δt = 0.01 (the issue's size): 10⁶ increments."""
    return sample_target("ou2d", trials=100, time=100, seed=5, dt=0.01, record_every=1)


@pytest.mark.slow      # 24 s: the full run, so that pytest keeps a margin under 5 minutes
def test_ou2d_from_data_drift_diffusion_and_stationary_covariance(ou_data):
    """Increment matching on ou2d: e_f ≤ 0.05 and e_D ≤ 0.1 against the true fields at held-out
    points (measured 0.02 and 0.001 with 256 neurons; 48 here), and the fitted network's stationary
    covariance within 5% of the data's. The covariance of 100 trials × 80 time units (correlation
    time ~1) has a sampling error of about 1/sqrt(8000 · 2) ≈ 1% per entry; both sides have it."""
    net = fit_data(ou_data, 48, seed=0, progress=None)
    fit = net.meta["fit"]
    assert fit["e_f"] <= 0.05 and fit["e_D"] <= 0.1
    # the increments are noise-dominated: the network predicts them as well as the truth does
    assert fit["e_increments"] < 1.001 * fit["e_increments_truth"]
    zs = sample_network(net, trials=100, time=100, seed=9).stationary(20.0)
    zd = ou_data.stationary(20.0)
    C_net, C_data = np.cov(zs.T), np.cov(zd.T)
    assert np.linalg.norm(C_net - C_data) / np.linalg.norm(C_data) < 0.05
    # the truth was read from the file's metadata, and the model keeps it as its target
    assert net.meta["system"]["name"] == "ou2d" and net.meta["training"]["from_data"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["double_well", "limit_cycle"])
def test_recovery_from_fine_data(name):
    data = sample_target(name, trials=100, time=100, seed=5, dt=0.01, record_every=1)
    net = fit_data(data, 48, seed=0, progress=None)
    assert net.meta["fit"]["e_f"] <= 0.05 and net.meta["fit"]["e_D"] <= 0.1


def test_nan_gaps_split_trials_and_increments_never_cross_them():
    t = np.arange(8) * 0.5
    z = np.arange(2 * 8 * 1, dtype=float).reshape(2, 8, 1)
    z[0, 3] = np.nan            # trial 0: segments [0..2], [4..7]
    z[1, 0] = np.nan            # trial 1: segment [1..7]
    obs = Observations(t, z)
    z0, z1 = obs.pairs([0, 1])
    # segments give 2 + 3 + 6 increments, each one step of +1 in this ramp
    assert len(z0) == 11 and np.all(z1 - z0 == 1.0)
    z0, z1 = obs.pairs([0], lag=2)
    assert len(z0) == 1 + 2 and np.all(z1 - z0 == 2.0)


def test_bad_data_is_refused_with_the_key_and_what_to_do(tmp_path):
    z = np.zeros((2, 10, 1))
    with pytest.raises(DDMError, match="irregular time stamps"):
        Observations(np.r_[np.arange(9) * 0.1, 1.5], z)
    with pytest.raises(DDMError, match="increase strictly"):
        Observations(np.r_[0.0, np.arange(9) * 0.1], z)
    with pytest.raises(DDMError, match="'z'"):
        Observations(np.arange(10) * 0.1, np.zeros((10, 1)))
    with pytest.raises(DDMError, match="'t'"):
        Observations(np.arange(9) * 0.1, z)
    path = tmp_path / "bad.npz"
    np.savez(path, t=np.arange(10.0), z=np.zeros((10, 2)))
    with pytest.raises(DDMError, match="'z'"):
        fit_data(str(path), 8, progress=None)
    few = Trajectories(np.arange(10) * 0.1, np.random.default_rng(0).standard_normal((2, 10, 1)))
    with pytest.raises(DDMError, match="too few"):
        fit_data(few, 64, progress=None)


def test_fit_from_data_cli_and_sampling_a_model_without_truth(tmp_path):
    from click.testing import CliRunner
    from ddm_numba_cli.main import main
    rng = np.random.default_rng(1)
    # an AR(1) recorded with no system named in the file: exact OU, B = 1, D = 0.5
    dt, T, trials = 0.05, 2000, 20
    a = np.exp(-dt)
    z = np.zeros((trials, T, 1))
    z[:, 0, 0] = rng.standard_normal(trials) * 0.5
    for k in range(1, T):
        z[:, k, 0] = a * z[:, k - 1, 0] + np.sqrt(0.25 * (1 - a * a)) * rng.standard_normal(trials)
    path = str(tmp_path / "obs.npz")
    Trajectories(np.arange(T) * dt, z).save(path)
    runner = CliRunner()
    model = str(tmp_path / "m.npz")
    res = runner.invoke(main, ["fit", "--data", path, "--neurons", "16", "--out", model, "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["sample", model, "--out", str(tmp_path / "s.npz"), "--trials", "4",
                               "--time", "5"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["sample", model, "--out", str(tmp_path / "s2.npz"), "--target"])
    assert res.exit_code == 1 and "fitted to data" in res.output
    res = runner.invoke(main, ["fit", "ou2d", "--data", path, "--out", model])
    assert res.exit_code == 2 and "either SYSTEM or --data" in res.output
    res = runner.invoke(main, ["fit", "ou2d", "--substeps", "4", "--out", model])
    assert res.exit_code == 2 and "--substeps" in res.output
    res = runner.invoke(main, ["fit", "ou2d", "--unweighted", "--out", model])
    assert res.exit_code == 2 and "--unweighted" in res.output
    res = runner.invoke(main, ["fit", "--data", path, "--neurons", "16", "--out", model, "-q",
                               "--unweighted"])
    assert res.exit_code == 0, res.output


@pytest.mark.slow
def test_adjoint_refinement_removes_the_bias_of_coarse_increments():
    """limit_cycle sampled every Δt = 0.2: one-step Euler targets are biased (the drift changes
    over Δt), so increment matching without the Itô correction is visibly off; the RK4 shooting
    loss with its adjoint gradient removes the bias, and so does the Itô–Taylor correction of the
    targets (the default). Measured with these settings (N = 32, over the central-99% region):
    e_f 0.117 → 0.047 by refinement (300 iterations, before early stopping), 0.033 by the Itô
    correction alone; here fewer iterations, and the bounds leave room."""
    data = sample_target("limit_cycle", trials=100, time=100, seed=5, dt=0.01, record_every=20)
    plain = fit_data(data, 32, seed=0, ito=False, progress=None)
    refined = fit_data(data, 32, seed=0, ito=False, substeps=4, refine_iter=150, progress=None)
    corrected = fit_data(data, 32, seed=0, progress=None)
    e0, e1 = plain.meta["fit"]["e_f"], refined.meta["fit"]["e_f"]
    assert e0 > 0.1                     # visibly biased
    assert e1 < e0 / 1.5
    assert corrected.meta["fit"]["e_f"] < e0 / 1.5
    assert refined.meta["training"]["stages"]["refine"]["iterations"] > 10


@pytest.mark.slow      # 28 s (the gain path scored with the diffusion's polish): the full run
def test_state_dependent_noise_from_data():
    """multiplicative (g = sqrt(a + b z²)): the noisy targets r rᵀ/Δt of the residuals, smoothed
    and fitted by the diffusion loss, recover D(z) over the region the data visit (measured
    e_D ≈ 0.07; a constant D cannot: e_D > 0.3)."""
    data = sample_target("multiplicative", trials=50, time=100, seed=2, dt=0.005,
                         record_every=2)
    const = fit_data(data, 32, seed=0, progress=None)
    state = fit_data(data, 32, seed=0, state_noise=True, progress=None)
    assert const.meta["fit"]["e_D"] > 0.3
    assert state.meta["fit"]["e_D"] <= 0.1 and state.meta["fit"]["e_f"] <= 0.05
    assert state.meta["training"]["stages"]["diffusion"]["iterations"] > 0
    assert np.any(state.R != 0)


def test_weighted_gram_statistics_against_numpy():
    """backends.cpu.weighted_gram_statistics: G_a = mean(w_a ψψᵀ), C[:, a] = mean(w_a ψ Y_a), one
    Gram matrix per output, against the sums written out (K = 700: blocks of 256 and a partial
    one); with unit weights both equal gram_statistics' G and C."""
    from ddm_numba.backends import cpu
    rng = np.random.default_rng(1)
    N, d, K = 7, 2, 700
    M, c = rng.standard_normal((N, d)), rng.standard_normal(N)
    z, Y = rng.standard_normal((K, d)), rng.standard_normal((K, 3))
    W = rng.uniform(0.1, 5.0, (K, 3))
    G, C = cpu.weighted_gram_statistics(z, Y, W, np.ascontiguousarray(M.T), c)
    psi = np.column_stack([np.tanh(z @ M.T + c), np.ones(K)])
    for a in range(3):
        np.testing.assert_allclose(G[a], (psi * W[:, a:a + 1]).T @ psi / K, rtol=1e-12)
        np.testing.assert_allclose(C[:, a], psi.T @ (W[:, a] * Y[:, a]) / K, rtol=1e-12)
    G1, C1 = cpu.weighted_gram_statistics(z, Y, np.ones_like(Y), np.ascontiguousarray(M.T), c)
    G0, C0, _ = cpu.gram_statistics(z, np.zeros((K, 0)), Y, np.ascontiguousarray(M.T), c)
    np.testing.assert_allclose(G1[1], G0, rtol=1e-12)
    np.testing.assert_allclose(C1, C0, rtol=1e-12)


@pytest.mark.slow
def test_increments_weighted_by_the_inverse_noise_variance_lower_the_drift_error():
    """multiplicative (D = 0.2 + 0.5 z², 0.2 … 2.2 over the visited states): the increments of the
    noisy tails carry 10× the variance of those near 0, so weighting each by 1/D̂ (maximum
    likelihood) should lower the drift's error; for a linear drift the efficiency of unweighted
    least squares against weighted, E[z² D] E[z²/D] / E[z²]², is 1.95 in this law (e_f × 0.72 for
    a one-parameter fit).

    At this size (40 trials × 100 time units, N = 32) the gain is not there dataset by dataset:
    measured on seeds 4–8 (2026-12-02), weighted/unweighted e_f = 0.76, 0.57, 0.75, 1.57, 0.97,
    and 0.80 for the means (an earlier single dataset gave 0.059 → 0.023, and this test asserted
    a 30 % drop on it). So it asserts what these five datasets support: over them the weighted
    fits' mean e_f is below the unweighted fits' (the difference, 0.011 ± 0.008, is 1.4 standard
    errors: the benefit at this size is weak), and each run's weights span the modelled range
    (measured 0.01 … 1.2): constant weights fail the second, weights that hurt the first."""
    plain_e, ml_e = [], []
    for seed in (4, 5, 6, 7, 8):
        data = sample_target("multiplicative", trials=40, time=100, seed=seed, dt=0.005,
                             record_every=2)
        plain = fit_data(data, 32, seed=0, weighted=False, progress=None)
        ml = fit_data(data, 32, seed=0, progress=None)
        info = ml.meta["training"]["stages"]["increments"]["weighted"]
        assert info["weighted"] == [True]
        lo, hi = info["weight_range"][0]
        assert hi / lo > 5
        plain_e.append(plain.meta["fit"]["e_f"])
        ml_e.append(ml.meta["fit"]["e_f"])
    assert np.mean(ml_e) < np.mean(plain_e), (ml_e, plain_e)


def _held_out_multistep(net, data, substeps, n_val):
    """Λ-weighted squared error of each network's flow-map prediction of the next held-out
    observation, computed here from the held-out trials (Λ = 1/var of the training increments,
    fit_data's weights): the quantity the refinement is early-stopped on."""
    from ddm_numba.learn.multistep import integrate
    obs = Observations(data.t, data.z)
    z0, z1 = obs.pairs(range(obs.trials - n_val))
    v0, v1 = obs.pairs(range(obs.trials - n_val, obs.trials))
    dt = obs.dt
    lam = 1.0 / ((z1 - z0) / dt).var(axis=0)
    pred = (integrate(net.A, net.b_z, net.M, net.c, net.tau, v0, dt / substeps, substeps)
            if substeps else integrate(net.A, net.b_z, net.M, net.c, net.tau, v0, dt / 4, 4))
    return float(np.mean(np.sum(lam * (pred - v1) ** 2, axis=1)))


@pytest.mark.parametrize("neurons", [16, 96])      # 1.4 s and 2.9 s warm
def test_refinement_never_makes_the_held_out_loss_worse(neurons):
    """limit_cycle at Δt = 0.2 (biased one-step targets), 10 trials × 40 time units: the adjoint
    refinement is early-stopped on the held-out trials' multi-step loss and falls back to the
    increment-matching solution when no iterate lowers it. With 96 neurons on ~1600 training
    pairs it has every chance to overfit (measured: no chunk of 20 iterations lowered the
    held-out loss, and the increment-matching solution came back unchanged). Either way the held-out
    loss, recomputed here, is not above increment matching's (1e-9 relative: rounding)."""
    data = sample_target("limit_cycle", trials=10, time=40, seed=3, dt=0.01, record_every=20)
    plain = fit_data(data, neurons, seed=0, progress=None)
    refined = fit_data(data, neurons, seed=0, substeps=4, refine_iter=60, progress=None)
    info = refined.meta["training"]["stages"]["refine"]
    before = _held_out_multistep(plain, data, 4, 2)
    after = _held_out_multistep(refined, data, 4, 2)
    assert after <= before * (1 + 1e-9)
    assert info["held_out_best"] <= info["held_out_start"]
    if info["kept_increment_matching"]:
        np.testing.assert_array_equal(refined.A, plain.A)
    else:
        assert after < before
    # e_f against the truth follows only loosely: measured 0.123 -> 0.125 (16 neurons), the
    # held-out loss being noise-dominated (0.84, its floor the noise); bound: no worse than 10 %
    assert refined.meta["fit"]["e_f"] <= 1.1 * plain.meta["fit"]["e_f"]


def test_ito_generator_of_the_network_drift_against_finite_differences():
    """learn.fit._generator_of_drift: L f = J f + ½ D : ∇∇f from the analytic derivatives, against
    central differences of the drift (step 1e-4: error ~1e-8 on O(1) values; bound 1e-6); and
    _cross (the ridge right-hand side alone) against the Gram kernel's C."""
    from ddm_numba.backends import cpu
    from ddm_numba.learn.fit import _cross, _drift, _generator_of_drift
    rng = np.random.default_rng(0)
    N, d, K, tau, e = 9, 2, 5, 0.7, 1e-4
    A, b = rng.standard_normal((d, N)), rng.standard_normal(d)
    M, c = rng.standard_normal((N, d)), rng.standard_normal(N)
    z = rng.standard_normal((K, d))
    D = np.array([[0.3, 0.1], [0.1, 0.2]])

    def f(x):
        return _drift(A, b, M, c, tau, x)

    E = e * np.eye(d)
    J = np.stack([(f(z + E[j]) - f(z - E[j])) / (2 * e) for j in range(d)], axis=2)
    H = np.empty((K, d, d, d))
    for i in range(d):
        for j in range(d):
            H[:, :, i, j] = (f(z + E[i] + E[j]) - f(z + E[i] - E[j]) - f(z - E[i] + E[j])
                             + f(z - E[i] - E[j])) / (4 * e * e)
    ref = np.einsum("kab,kb->ka", J, f(z)) + 0.5 * np.einsum("kaij,ij->ka", H, D)
    np.testing.assert_allclose(_generator_of_drift(A, b, M, c, tau, z, D), ref, atol=1e-6)
    # the diffusion's part alone (the refinement's target correction)
    np.testing.assert_allclose(_generator_of_drift(A, b, M, c, tau, z, D, deterministic=False),
                               0.5 * np.einsum("kaij,ij->ka", H, D), atol=1e-6)
    Y = rng.standard_normal((K, d))
    _, C, _ = cpu.gram_statistics(z, np.zeros((K, 0)), Y, np.ascontiguousarray(M.T), c)
    np.testing.assert_allclose(_cross(M, c, z, Y), C, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_validation_over_trial_folds_against_refitting_each_fold(weighted):
    """learn.fit._Ridge keeps per-fold Gram sums, so the model without fold j is a solve with the
    other folds' sums and its error on fold j costs nothing more. Against the direct way, with the
    folds' samples concatenated and ridge_solve / the mean squared error written out: the same
    to rounding (1e-9 relative), for every fold, penalty and output, weighted or not; and the
    decoders are solved on the training folds (1 …), never on the held-out fold 0."""
    from ddm_numba.learn.fit import _Ridge
    from ddm_numba.training import ridge_solve
    rng = np.random.default_rng(3)
    N, d, tau = 6, 2, 0.8
    M, c = rng.standard_normal((N, d)), rng.standard_normal(N)
    z, zv = rng.standard_normal((900, d)), rng.standard_normal((300, d))
    y, yv = rng.standard_normal((900, d)), rng.standard_normal((300, d))
    fold = np.repeat([1, 2, 3], 300)
    lam = np.array([1.0, 2.0])
    w = (rng.uniform(0.5, 2, (900, d)), rng.uniform(0.5, 2, (300, d))) if weighted else None
    ridge = _Ridge(M, c, z, y, fold, zv, yv, lam, tau, weights=w)
    Z = [zv] + [z[fold == j] for j in (1, 2, 3)]
    Yall = [yv] + [y[fold == j] for j in (1, 2, 3)]
    W = [np.ones_like(yv)] + [np.ones((300, d))] * 3 if w is None else \
        [w[1]] + [w[0][fold == j] for j in (1, 2, 3)]

    def direct(reg, train, test):
        zt, Yt, Wt = (np.concatenate([a[i] for i in train]) for a in (Z, Yall, W))
        out = []
        for a in range(d):
            psi = np.column_stack([np.tanh(zt @ M.T + c), np.ones(len(zt))])
            G = (psi * Wt[:, a:a + 1]).T @ psi / len(zt)
            C = psi.T @ (Wt[:, a] * (tau * Yt[:, a] + zt[:, a])) / len(zt)
            pen = np.r_[np.ones(N), 0.0] * reg * lam.mean() / lam[a]
            th = ridge_solve(G, C, pen)
            ps = np.column_stack([np.tanh(Z[test] @ M.T + c), np.ones(len(Z[test]))])
            res = ps @ th - (tau * Yall[test][:, a] + Z[test][:, a])
            out.append((th, lam[a] * np.mean(W[test][:, a] * res ** 2) / tau ** 2))
        return out

    for reg in (1e-6, 1e-2):
        errs = ridge.fold_errors(reg)
        for j in range(4):
            ref = direct(reg, [i for i in range(4) if i != j], j)
            np.testing.assert_allclose(errs[j], [e for _, e in ref], rtol=1e-9)
        theta = ridge.solve(reg)
        ref = direct(reg, [1, 2, 3], 0)
        np.testing.assert_allclose(theta, np.array([t for t, _ in ref]), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ridge.error_per_output(theta), [e for _, e in ref], rtol=1e-9)
