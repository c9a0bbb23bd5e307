"""OU closed forms and EPR estimators (ddm_numba.analysis.linear / .estimators).

Exact values are the test cases of docs/irreversibility.md §6 (T1–T9, T15), derived there by hand or
with sympy, never taken from this code. Statistical tests use paths sampled *exactly* (one-step
e^{−BΔt} map, §2.3) with fixed seeds; every tolerance is a stated multiple of a standard deviation
derived in the comment next to it (asymptotic formula, checked against the spread over many seeds
recorded in the estimators' docstrings).
"""
import numpy as np
import pytest
from scipy.linalg import cholesky, expm, solve_continuous_lyapunov

from ddm_numba.analysis import estimators as est
from ddm_numba.analysis.linear import asymmetry, ou_epr_split, ou_stationary
from ddm_numba.errors import DDMError

J = np.array([[0.0, -1.0], [1.0, 0.0]])
I2 = np.eye(2)
B2 = np.array([[1.0, 0.5], [-0.3, 2.0]])          # T3
D2 = np.array([[1.0, 0.2], [0.2, 2.0]])           # T3, project D = 2 D_p
RTOL = 1e-10


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def random_stable(rng, d, margin=0.3):
    """A random non-normal B with every Re λ ≥ margin."""
    M = rng.standard_normal((d, d))
    return M + (margin - np.linalg.eigvals(M).real.min()) * np.eye(d)


def random_spd(rng, d):
    G = rng.standard_normal((d, d))
    return G @ G.T + 0.5 * np.eye(d)


def exact_ou_path(B, D, dt, T, trials, seed):
    """Stationary OU paths sampled exactly: z_{n+1} = e^{−BΔt} z_n + N(0, S − e^{−BΔt} S e^{−BᵀΔt}).

    Built from scipy directly (not from the module under test)."""
    S = solve_continuous_lyapunov(B, D)
    A = expm(-B * dt)
    L = cholesky(S - A @ S @ A.T, lower=True)
    rng = np.random.default_rng(seed)
    d = B.shape[0]
    z = np.empty((trials, T, d))
    z[:, 0] = rng.standard_normal((trials, d)) @ cholesky(S, lower=True).T
    noise = rng.standard_normal((T, trials, d)) @ L.T
    for n in range(1, T):
        z[:, n] = z[:, n - 1] @ A.T + noise[n]
    return z


def ar1_sd(dt, t_tot):
    """Asymptotic sd of Φ̂ from the AR(1)/exact fit of the rotation OU (w = 1, D = 2I, S = I).

    Least squares: var Â_ij = Σ_ii (S⁻¹)_jj / n with Σ = (1 − e^{−2Δt}) I, n = T_tot/Δt;
    B̂ = −logm(Â)/Δt gives var B̂_ij ≈ (e^{2Δt} − 1)/(Δt T_tot). With Φ = 2w²/a
    (w = (B₂₁ − B₁₂)/2, a = tr B/2): var ŵ = var â = var B̂_ij / 2, ∂Φ/∂w = 4, ∂Φ/∂a = −2
    ⇒ var Φ̂ = 10 (e^{2Δt} − 1)/(Δt T_tot).
    (→ 20/T_tot as Δt → 0; 200 seeds gave sd 0.35/0.098 vs 0.32/0.10 here at T_tot = 200/2000.)
    """
    return np.sqrt(10.0 * np.expm1(2 * dt) / (dt * t_tot))


@pytest.fixture(scope="module")
def path_coarse():
    """Rotation OU (w = 1, D = 2I, Φ = 2), Δt = 0.1, 40 trials × 2500 samples: T_tot = 10⁴."""
    return exact_ou_path(I2 + J, 2 * I2, 0.1, 2500, 40, seed=11), 0.1


@pytest.fixture(scope="module")
def path_fine():
    """Rotation OU, Δt = 0.01, 50 trials × 4000 samples: T_tot = 2000."""
    return exact_ou_path(I2 + J, 2 * I2, 0.01, 4000, 50, seed=12), 0.01


# ------------------------------------------------------------------------------------------------
# closed forms (docs/irreversibility.md §2, §6)


@pytest.mark.parametrize("w", [0.5, 1.0, 2.0, 3.0])
def test_T1_rotation(w):
    r = ou_stationary(I2 + w * J, 2 * I2)
    assert abs(r.epr - 2 * w * w) <= RTOL * 2 * w * w
    assert abs(r.epr_check - 2 * w * w) <= RTOL * 2 * w * w
    assert rel(r.S, I2) < RTOL
    assert rel(r.Q, w * J) < RTOL and abs(r.Q[0, 1] + w) < RTOL * w
    assert rel(r.current_matrix, -w * J) < RTOL      # f_irr = −wJz, a rigid rotation
    assert rel(r.reversible_matrix, -I2) < RTOL      # f_rev = −z


@pytest.mark.parametrize("d", [0.01, 0.5, 1.0, 7.3])
def test_T2_noise_scale_invariance(d):
    r = ou_stationary(2 * I2 + 5 * J, 2 * d * I2)     # D_p = d I
    assert abs(r.epr - 25.0) <= RTOL * 25
    assert abs(r.epr_check - 25.0) <= RTOL * 25


def test_noise_scale_and_change_of_variables_random():
    rng = np.random.default_rng(0)
    B, D = random_stable(rng, 5), random_spd(rng, 5)
    ref = ou_stationary(B, D)
    for c in (1e-3, 0.37, 42.0):
        r = ou_stationary(B, c * D)
        assert abs(r.epr - ref.epr) <= RTOL * ref.epr
        assert rel(r.S, c * ref.S) < RTOL and rel(r.Q, c * ref.Q) < RTOL
    Tm = rng.standard_normal((5, 5)) + 3 * np.eye(5)   # y = T z: B → T B T⁻¹, D → T D Tᵀ
    r = ou_stationary(Tm @ B @ np.linalg.inv(Tm), Tm @ D @ Tm.T)
    assert abs(r.epr - ref.epr) <= 1e-9 * ref.epr


def test_T3_anisotropic_2d():
    r = ou_stationary(B2, D2)
    assert abs(r.epr - 121 / 588) <= RTOL * 121 / 588
    assert abs(r.epr_check - 121 / 588) <= RTOL * 121 / 588
    S_exact = np.array([[125 / 258, 4 / 129], [4 / 129, 217 / 430]])
    assert rel(r.S, S_exact) < RTOL
    assert abs(r.Q[0, 1] - 11 / 60) < RTOL and abs(r.Q[1, 0] + 11 / 60) < RTOL
    # 2-D formula (§2.1 item 9), written from B and D_p only.
    Dp = D2 / 2
    BD = B2 @ Dp
    phi_2d = (BD[0, 1] - BD[1, 0]) ** 2 / (np.trace(B2) * np.linalg.det(Dp))
    assert abs(r.epr - phi_2d) <= RTOL * phi_2d


def test_T4_chain_and_ensemble_identity():
    B3 = np.array([[1.0, 2, 0], [0, 1, 2], [0, 0, 1]])
    r = ou_stationary(B3, 2 * np.eye(3))              # D_p = I
    S_exact = np.array([[9.0, -4, 1], [-4, 3, -1], [1, -1, 1]])
    assert rel(r.S, S_exact) < RTOL
    assert abs(r.epr - 6) <= RTOL * 6 and abs(r.epr_check - 6) <= RTOL * 6
    # §2.1 item 7 with D_p⁻¹ = I: tr(Bᵀ B S) − tr B, from the integer S and from the solved S.
    assert np.trace(B3.T @ B3 @ S_exact) - np.trace(B3) == 6
    assert abs(np.trace(B3.T @ B3 @ r.S) - np.trace(B3) - 6) < 1e-9


@pytest.mark.parametrize("a", [0.5, 1.5, 3.0])
def test_T5_feedforward(a):
    r = ou_stationary(np.array([[1.0, 0], [-a, 1]]), 2 * I2)
    assert abs(r.epr - a * a / 2) <= RTOL * a * a / 2
    if a == 1.5:   # §5.2: W = [[0,0],[1.5,0]]: f_irr ≠ W_a z
        assert rel(r.current_matrix, [[0.36, -0.48], [1.02, -0.36]]) < RTOL


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_T6_detailed_balance(seed):
    rng = np.random.default_rng(seed)
    M, Dp = random_spd(rng, 4), random_spd(rng, 4)
    r = ou_stationary(M @ np.linalg.inv(Dp), 2 * Dp)   # B D_p = M symmetric
    assert abs(r.epr) < 1e-14 and abs(r.epr_check) < 1e-14
    assert np.max(np.abs(r.Q)) < 1e-13 * np.max(np.abs(r.S))
    assert rel(r.S, Dp @ np.linalg.inv(M) @ Dp) < 1e-10        # S = B⁻¹ D_p (§2.1 item 5)


@pytest.mark.parametrize("d", [0.05, 1.0, 4.0])
def test_T7_embedded_rotation(d):
    U, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((10, 2)))
    w = 2.5
    W = U @ (-w * J) @ U.T
    r = ou_stationary(np.eye(10) - W, 2 * d * np.eye(10))
    assert abs(r.epr - 12.5) <= RTOL * 12.5
    assert abs(asymmetry(W)["norm_W_a"] ** 2 - 12.5) < 1e-12


def normal_W(rng):
    """Normal 6×6 W = O blockdiag([[a, −b], [b, a]]) Oᵀ with a < 1 (so I − W is stable)."""
    O, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    blocks = np.zeros((6, 6))
    for k, (a, b) in enumerate([(0.3, 1.2), (-0.8, 0.4), (0.9, -2.0)]):
        blocks[2 * k:2 * k + 2, 2 * k:2 * k + 2] = [[a, -b], [b, a]]
    return O @ blocks @ O.T


@pytest.mark.parametrize("d", [0.2, 3.0])
def test_T8_normal_network(d):
    W = normal_W(np.random.default_rng(8))
    Ws, Wa = (W + W.T) / 2, (W - W.T) / 2
    assert np.allclose(Ws @ Wa, Wa @ Ws)
    r = ou_stationary(np.eye(6) - W, 2 * d * np.eye(6))
    phi = -np.trace(Wa @ Wa @ np.linalg.inv(np.eye(6) - Ws))
    assert abs(r.epr - phi) <= RTOL * phi
    assert rel(r.current_matrix, Wa) < RTOL           # f_irr = W_a z exactly for normal W
    # W_s = 0 ⇒ Φ = ‖W_a‖_F²
    r0 = ou_stationary(np.eye(6) - Wa, 2 * d * np.eye(6))
    assert abs(r0.epr - np.sum(Wa * Wa)) <= RTOL * r0.epr


def test_general_identities_random():
    """§2.1 items 2, 3, 6, 7 and §4.6 on a random non-normal B and diagonal anisotropic D."""
    rng = np.random.default_rng(5)
    B = random_stable(rng, 4)
    D = np.diag(rng.uniform(0.5, 3.0, 4))
    r = ou_stationary(B, D)
    Dp_inv = np.linalg.inv(D / 2)
    F, R, S = r.current_matrix, r.reversible_matrix, r.S
    assert rel(B @ S + S @ B.T, D) < 1e-12 and r.lyapunov_residual < 1e-12
    assert rel(r.Q, -r.Q.T) < 1e-15
    assert rel(R + F, -B) < RTOL                                     # f = f_rev + f_irr
    assert rel(-(R - F), S @ B.T @ np.linalg.inv(S)) < 1e-9          # time-reversed drift B^R
    assert abs(np.trace(R.T @ Dp_inv @ F @ S)) < 1e-10 * r.epr       # f_rev ⟂ f_irr
    assert abs(r.epr - r.epr_check) <= RTOL * r.epr
    ens = np.trace(B.T @ Dp_inv @ B @ S) - np.trace(B)               # ensemble identity
    assert abs(ens - r.epr) <= 1e-9 * r.epr
    per_coord = np.sum(np.diag(F @ S @ F.T) / np.diag(D / 2))        # §4.6 per coordinate
    assert abs(per_coord - r.epr) <= 1e-9 * r.epr


# ------------------------------------------------------------------------------------------------
# split along B = Σ B_k (§5.2)


def random_net(rng, n=6):
    W = rng.standard_normal((n, n)) / np.sqrt(n)
    return W * (0.8 / max(np.linalg.eigvals(W).real.max(), 0.8))   # Re λ(W) ≤ 0.8


@pytest.mark.parametrize("d", [0.3, 2.0])
def test_split_isotropic_symmetric_part_contributes_zero(d):
    W = random_net(np.random.default_rng(21))
    n = W.shape[0]
    Ws, Wa = (W + W.T) / 2, (W - W.T) / 2
    phi_s, phi_a = ou_epr_split([np.eye(n) - Ws, -Wa], 2 * d * np.eye(n))
    r = ou_stationary(np.eye(n) - W, 2 * d * np.eye(n))
    assert abs(phi_s) < 1e-12 * r.epr
    assert abs(phi_a - r.epr) <= RTOL * r.epr
    assert abs(np.trace(r.Q @ Wa) / d - r.epr) <= RTOL * r.epr      # §5.2 Φ = (1/d) tr(Q W_a)


def test_split_anisotropic_symmetric_part_nonzero():
    rng = np.random.default_rng(22)
    W = random_net(rng)
    n = W.shape[0]
    D = np.diag(rng.uniform(0.2, 3.0, n))
    Ws, Wa = (W + W.T) / 2, (W - W.T) / 2
    phi_s, phi_a = ou_epr_split([np.eye(n) - Ws, -Wa], D)
    phi = ou_stationary(np.eye(n) - W, D).epr
    assert abs(phi_s + phi_a - phi) <= RTOL * phi
    assert abs(phi_s) > 1e-3 * phi
    # any split sums to Φ, including a 3-way one and the trivial one
    parts = [np.eye(n), -Ws, -Wa]
    assert abs(ou_epr_split(parts, D).sum() - phi) <= RTOL * phi
    assert abs(ou_epr_split([np.eye(n) - W], D)[0] - phi) <= RTOL * phi


# ------------------------------------------------------------------------------------------------
# asymmetry measures (§5.1, T15)


def test_T15_iid_gaussian():
    N = 1000
    m = asymmetry(np.random.default_rng(15).standard_normal((N, N)))
    # ‖W_a‖² ≈ N(N−1)/2 (var 2·N(N−1)/2), ‖W_s‖² ≈ N(N+1)/2 (var ≈ same), independent (Gaussian
    # W_ij ± W_ji). So a² = ½ − 1/(2N) ± 1/(√2 N) and a = 1/√2 − 1/(2√2 N) ± 1/(2N);
    # η = (‖W_s‖² − ‖W_a‖²)/‖W‖² = 1/N ± √2/N. Tolerance: bias + 5 sd.
    assert abs(m["a"] - 1 / np.sqrt(2)) < 1 / (2 * np.sqrt(2) * N) + 5 / (2 * N)
    assert abs(m["eta"] - 1 / N) < 5 * np.sqrt(2) / N
    assert abs(m["a"] ** 2 - (1 - m["eta"]) / 2) < 1e-14


def test_asymmetry_extremes_and_identities():
    rng = np.random.default_rng(16)
    X = rng.standard_normal((7, 7))
    sym, anti = asymmetry(X + X.T), asymmetry(X - X.T)
    assert sym["a"] == 0 and abs(sym["eta"] - 1) < 1e-14
    assert abs(anti["a"] - 1) < 1e-14 and abs(anti["eta"] + 1) < 1e-14
    for k in range(5):
        m = asymmetry(rng.standard_normal((5, 5)) + k * np.eye(5))
        assert abs(m["a"] ** 2 - (1 - m["eta"]) / 2) < 1e-14
        assert abs(m["norm_W"] ** 2 - m["norm_W_s"] ** 2 - m["norm_W_a"] ** 2) < 1e-12


def test_henrici():
    chain = np.diag(np.ones(4), 1)                    # feedforward chain, nilpotent
    assert abs(asymmetry(chain)["henrici"] - 1) < 1e-12
    assert abs(asymmetry([[0, 1.0], [0, 0]])["henrici"] - 1) < 1e-12
    # normal matrices: 0 up to √(round-off), since it is a square root of a difference
    assert asymmetry(normal_W(np.random.default_rng(3)))["henrici"] < 1e-6
    X = np.random.default_rng(4).standard_normal((6, 6))
    assert asymmetry(X + X.T)["henrici"] < 1e-6
    with pytest.raises(DDMError, match="all zeros"):
        asymmetry(np.zeros((3, 3)))


# ------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("B, D, match", [
    (J, 2 * I2, "not stable"),                               # pure rotation: Re λ = 0
    (-I2 + J, 2 * I2, "not stable"),
    (I2, [[1.0, 2.0], [2.0, 1.0]], "not positive definite"),
    (I2, [[1.0, 0.5], [0.0, 1.0]], "not symmetric"),
    (I2, np.zeros((2, 2)), "not positive definite"),
    (np.ones((2, 3)), 2 * I2, "square"),
    (I2, 2 * np.eye(3), "shape"),
    ([[1.0, np.nan], [0, 1]], 2 * I2, "NaN"),
])
def test_ou_stationary_bad_input(B, D, match):
    with pytest.raises(DDMError, match=match):
        ou_stationary(B, D)
    assert issubclass(DDMError, ValueError)


def test_estimators_bad_input(path_fine):
    z, dt = path_fine
    f = -z @ (I2 + J).T
    with pytest.raises(DDMError, match="shape"):
        est.ar1_epr(z[0, :, 0], dt)
    with pytest.raises(DDMError, match="positive"):
        est.ar1_epr(z, 0.0)
    with pytest.raises(DDMError, match="inversion"):
        est.ar1_epr(z, dt, inversion="bogus")
    with pytest.raises(DDMError, match="too few samples"):
        est.ar1_epr(z[0, :10], dt)
    with pytest.raises(DDMError, match="lag"):
        est.lagged_asymmetry(z, dt, lag=0)
    with pytest.raises(DDMError, match="lag"):
        est.lagged_covariance_epr(z, dt, lag=0.5)
    with pytest.raises(DDMError, match="NaN"):
        est.gaussian_kl_rate(np.full((3, 100, 2), np.nan), dt)
    with pytest.raises(DDMError, match="leading shape"):
        est.ensemble_epr(f, np.zeros(3), 2 * I2)
    with pytest.raises(DDMError, match="positive definite"):
        est.ensemble_epr(f, np.zeros(f.shape[:2]), -I2)
    with pytest.raises(DDMError, match="drift at the samples"):
        est.stratonovich_epr(z, f[:, :-1], 2 * I2, dt)
    with pytest.raises(DDMError, match="stationary law"):
        est.shuffled_surrogate(est.ensemble_epr, z, dt, 0)
    with pytest.raises(DDMError, match="f="):
        est.shuffled_surrogate(est.stratonovich_epr, z, dt, 0, D=2 * I2)
    # z_{n+1} = −0.9 z_n + noise: Â ≈ −0.9 I has no real logarithm (not an OU sampled at Δt)
    x = np.zeros((2000, 2))
    e = np.random.default_rng(0).standard_normal((2000, 2))
    for n in range(1, 2000):
        x[n] = -0.9 * x[n - 1] + e[n]
    # (a near-degenerate −0.9 pair may come out complex: then logm is real but the fitted OU
    # is invalid; either way the message says why)
    with pytest.raises(DDMError, match="no real logarithm|not a valid stationary OU"):
        est.ar1_epr(x, dt)
    with pytest.raises(DDMError, match="no real logarithm|not a valid stationary OU"):
        est.lagged_covariance_epr(x, dt, lag=1)
    x[:, 1] = np.random.default_rng(1).standard_normal(2000)      # distinct real eigenvalues
    with pytest.raises(DDMError, match="no real logarithm"):
        est.ar1_epr(x, dt)


# ------------------------------------------------------------------------------------------------
# estimators on exactly sampled rotation OU (Φ = 2)


def test_pairs_stay_within_trials():
    z = np.random.default_rng(30).standard_normal((5, 50, 2))
    la = est.lagged_asymmetry(z, 0.1, lag=3)
    zc = z - z.reshape(-1, 2).mean(axis=0)
    C = sum(zc[k, 3:].T @ zc[k, :-3] for k in range(5)) / (5 * 47)
    assert rel(la.C, C) < 1e-12
    # reordering the trials cannot matter if no pair straddles two trials
    assert rel(est.lagged_asymmetry(z[::-1], 0.1, lag=3).C, C) < 1e-12
    assert rel(est.ar1_epr(z[[2, 0, 4, 1, 3]], 0.1, "euler").A, est.ar1_epr(z, 0.1, "euler").A) \
        < 1e-12


def test_ar1_exact_inversion(path_coarse):
    z, dt = path_coarse
    t_tot = z.shape[0] * z.shape[1] * dt
    r = est.ar1_epr(z, dt)
    sd = ar1_sd(dt, t_tot)                                       # 0.047 here
    assert abs(r.epr - 2.0) < 4 * sd
    # var B̂_ij ≈ D_ii (e^{2Δt} − 1)/(2Δt T_tot) (see ar1_sd); D̂ = B̂Ŝ + ŜB̂ᵀ has the same order
    sd_B = np.sqrt(2 * np.expm1(2 * dt) / (2 * dt * t_tot))
    assert np.max(np.abs(r.B - (I2 + J))) < 4 * sd_B
    assert np.max(np.abs(r.D - 2 * I2)) < 8 * sd_B
    assert rel(r.S, r.stationary.S) < 1e-10                     # the fitted OU reproduces Ŝ


def test_ar1_euler_has_dt_bias(path_coarse):
    z, dt = path_coarse
    t_tot = z.shape[0] * z.shape[1] * dt
    r = est.ar1_epr(z, dt, inversion="euler")
    # Its large-sample limit, from the exact one-step law: B = (I − e^{−BΔt})/Δt,
    # D = (S − e^{−BΔt} S e^{−BᵀΔt})/Δt with S = I.
    A = expm(-(I2 + J) * dt)
    limit = ou_stationary((I2 - A) / dt, (I2 - A @ A.T) / dt).epr
    assert limit < 1.7                                           # −18 % at Δt = 0.1
    assert abs(r.epr - limit) < 4 * ar1_sd(dt, t_tot)


def test_ar1_time_reversed_data(path_coarse):
    z, dt = path_coarse
    r = est.ar1_epr(z[:, ::-1], dt)
    # Time-reversed OU drift: S Bᵀ S⁻¹ = Bᵀ = I − J (S = I); same Φ.
    sd_B = np.sqrt(2 * np.expm1(2 * dt) / (2 * dt * z.shape[0] * z.shape[1] * dt))
    assert np.max(np.abs(r.B - (I2 - J))) < 4 * sd_B
    assert abs(r.epr - 2.0) < 4 * ar1_sd(dt, z.shape[0] * z.shape[1] * dt)


def test_lagged_covariance(path_coarse, path_fine):
    for z, dt, lag in [(*path_coarse, 1), (*path_coarse, 5), (*path_fine, 10)]:
        t_tot = z.shape[0] * z.shape[1] * dt
        tau = lag * dt
        r = est.lagged_covariance_epr(z, dt, lag)
        # Same fit as AR(1) at lag τ (ar1_sd(τ, ·)); 40 seeds gave sd ≤ 1.2× this up to τ = 0.5.
        assert abs(r.epr - 2.0) < 5 * ar1_sd(tau, t_tot)
        # Q̂₁₂: E = −e^{−τ} sin τ / τ (from C(τ) = e^{−τ}(cos τ I − sin τ J)); sd ≈ √(2/T_tot)
        assert abs(r.Q_hat[0, 1] + np.exp(-tau) * np.sin(tau) / tau) < 4 * np.sqrt(2 / t_tot)
        assert rel(r.asymmetry, r.C - r.C.T) < 1e-15
        assert rel(r.Q_hat, -r.asymmetry / (2 * tau)) < 1e-15
    # Q̂₁₂ → −1 as τ → 0: at τ = 0.01 within the bias 0.01 + 4 sd
    la = est.lagged_asymmetry(*path_fine, lag=1)
    assert abs(la.Q_hat[0, 1] + 1) < 0.01 + 4 * np.sqrt(2 / 2000)


@pytest.mark.parametrize("w", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("tau", [0.01, 0.1, 0.3, 1.0])
def test_T9_two_time_kl_closed_form(w, tau):
    B = I2 + w * J                                               # S = I, C(τ) = e^{−Bτ}
    kl = est.gaussian_two_time_kl(I2, expm(-B * tau))
    exact = 4 * np.sin(w * tau) ** 2 / np.expm1(2 * tau)
    assert abs(kl - exact) <= 1e-10 * exact
    assert kl / tau < 2 * w * w                                  # lower bound on Φ


def test_T9_kl_values_and_anisotropic():
    for tau, val in [(0.1, 1.800648), (0.01, 1.980001)]:
        assert abs(est.gaussian_two_time_kl(I2, expm(-(I2 + J) * tau)) / tau - val) < 1e-6
    S = solve_continuous_lyapunov(B2, D2)
    for tau, val in [(0.1, 0.17637), (0.01, 0.20271), (0.001, 0.20547)]:
        rate = est.gaussian_two_time_kl(S, expm(-B2 * tau) @ S) / tau
        assert abs(rate - val) < 1e-5 and rate < 121 / 588


def test_kl_rate_from_data(path_coarse):
    z, dt = path_coarse
    t_tot = z.shape[0] * z.shape[1] * dt
    rate = est.gaussian_kl_rate(z, dt, lag=1)
    # measured spread ≈ ar1_sd (1.800 ± 0.100 at T_tot = 2000, 200 seeds)
    assert abs(rate - 1.800648) < 4 * ar1_sd(dt, t_tot)
    assert rate < 2.0
    rate_1 = est.gaussian_kl_rate(z, dt, lag=10)                # τ = 1: exact 0.4433
    # 0.441 ± 0.039 at T_tot = 2000 (40 seeds) → sd ≈ 0.039 √(2000/T_tot)
    assert abs(rate_1 - 4 * np.sin(1) ** 2 / np.expm1(2)) < 4 * 0.039 * np.sqrt(2000 / t_tot)


def test_ensemble_iid_samples():
    rng = np.random.default_rng(40)
    K = 200_000
    for B, D, phi in [(I2 + J, 2 * I2, 2.0), (B2, D2, 121 / 588)]:
        S = solve_continuous_lyapunov(B, D)
        z = rng.standard_normal((K, 2)) @ cholesky(S, lower=True).T
        value, se = est.ensemble_epr(-z @ B.T, np.full(K, -np.trace(B)), D)
        assert abs(value - phi) < 4 * se
    # rotation: per-sample term 2|z|² − 2, |z|² ~ χ²₂ (var 4) ⇒ sd 4, stderr 4/√K
    z = rng.standard_normal((K, 2))
    value, se = est.ensemble_epr(-z @ (I2 + J).T, np.full(K, -2.0), 2.0)   # scalar D = 2I
    assert abs(se - 4 / np.sqrt(K)) < 0.05 * 4 / np.sqrt(K)
    # 3-D input: stderr from the per-trial means of independent trials
    z3 = z.reshape(100, -1, 2)
    v3, se3 = est.ensemble_epr(-z3 @ (I2 + J).T, np.full(z3.shape[:2], -2.0), 2 * I2)
    assert abs(v3 - value) < 1e-12 and abs(se3 - se) < 0.3 * se


def test_stratonovich(path_fine, path_coarse):
    for z, dt in (path_fine, path_coarse):
        t_tot = z.shape[0] * z.shape[1] * dt
        value, se = est.stratonovich_epr(z, -z @ (I2 + J).T, 2 * I2, dt)
        # exact-sampling expectation −tr(Bᵀ D⁻¹ (C − Cᵀ))/Δt = 2 e^{−Δt} sin(Δt)/Δt (module doc)
        expected = 2 * np.exp(-dt) * np.sin(dt) / dt
        assert abs(value - expected) < 4 * se
        # martingale part: variance 2 E[fᵀ D_p⁻¹ f] = 8 per unit time ⇒ sd ≈ √(8/T_tot)
        assert 0.7 < se / np.sqrt(8 / t_tot) < 1.3


# ------------------------------------------------------------------------------------------------
# surrogates


def test_surrogates_near_zero(path_fine):
    z, dt = path_fine
    t_tot = z.shape[0] * z.shape[1] * dt
    data = est.ar1_epr(z, dt).epr
    # ar1/KL null: with S ≈ I, D ≈ 2I, Φ̂ = 2 tr(S⁻¹Q̂ᵀD⁻¹Q̂) ≈ 2 Q̂₁₂², and on the surrogate
    # Q̂₁₂ ~ N(0, 2/T_tot) (the data's own Q̂ noise), so Φ̂ ≈ (4/T_tot) χ²₁ (200 seeds:
    # 0.0018 ± 0.0025 at T_tot = 2000). Bound: |Q̂₁₂| < 4 sd ⇔ Φ̂ < 2 · 16 · 2/T_tot.
    for estimator in (est.ar1_epr, est.gaussian_kl_rate):
        sur = est.shuffled_surrogate(estimator, z, dt, seed=0)
        assert sur.method == "reverse_blocks" and sur.segments == 50
        assert 0 <= sur.value < 64 / t_tot
    assert data > 1.5
    # Stratonovich: a reversed block gives minus its forward sum → mean 0, stderr of the data
    f = -z @ (I2 + J).T
    sur = est.shuffled_surrogate(est.stratonovich_epr, z, dt, seed=1, f=f, D=2 * I2)
    assert abs(sur.value) < 4 * sur.stderr and sur.stderr < 1.3 * np.sqrt(8 / t_tot)
    # signed asymmetry: data (C − Cᵀ)₁₂ = 2 e^{−τ} sin τ ≈ 0.0198, sd ≈ 2τ √(2/T_tot) ≈ 0.0006
    sd = 2 * dt * np.sqrt(2 / t_tot)
    la = est.lagged_asymmetry(z, dt)
    sur = est.shuffled_surrogate(est.lagged_asymmetry, z, dt, seed=2)
    assert abs(la.asymmetry[0, 1] - 2 * np.exp(-dt) * np.sin(dt)) < 4 * sd
    assert abs(sur.value[0, 1]) < 4 * sd
    assert rel(sur.result.S, la.S) < 1e-12                      # same samples, same stationary law
    # permutation null: pairs of independent samples, var((C − Cᵀ)₁₂) = 2/n_pairs
    perm = est.shuffled_surrogate(est.lagged_asymmetry, z, dt, seed=3, method="permute")
    assert abs(perm.value[0, 1]) < 4 * np.sqrt(2 / la.n_pairs)
    # one long trial: cut into 16 blocks, half of them reversed
    one = est.shuffled_surrogate(est.ar1_epr, z[0], dt, seed=4)
    assert one.segments == 16 and one.segment_length == z.shape[1] // 16
