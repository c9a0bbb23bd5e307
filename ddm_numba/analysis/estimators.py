"""Entropy production rate (EPR) from samples and trajectories, any d (docs/irreversibility.md
§3.1, §4).

Project convention: dz = f(z) dt + g dB, D = g gᵀ (no ½), D_p = D/2; Φ = 2 E[f_irrᵀ D⁻¹ f_irr].

Trajectories are arrays z of shape (trials, T, d) sampled every dt from a stationary process
(burn-in already removed); a (T, d) array is read as one trial. Statistics are pooled over
trials, and a sample is only ever paired with later samples of its *own* trial (never the last
sample of one trial with the first of the next).

Estimators                                                                          bound
    ensemble_epr          E_ps[2 fᵀ D⁻¹ f + ∇·f]          f, ∇·f at stationary samples   §3.1(b)  =
    stratonovich_epr      ⟨2 D⁻¹ f ∘ dz⟩ / dt              f along the path               §3.1(c)  =
    ar1_epr               AR(1) fit → OU closed form       data only, OU-like data        §4.1     ≤
    lagged_asymmetry      C(τ) − C(τ)ᵀ, Onsager estimate Q̂  data only                     §4.2
    lagged_covariance_epr −logm(C(τ) S⁻¹)/τ → closed form  data only, OU-like data        §4.2     ≤
    gaussian_kl_rate      two-time Gaussian KL / τ ≤ Φ     data only, lower bound         §4.3     ≤
    shuffled_surrogate    any of the above on data whose time arrow is destroyed (null, 0 expected)

The linear-Gaussian estimators (≤ above; :data:`LOWER_BOUNDS`) estimate a lower bound of Φ, not Φ:
for a nonlinear system they give the e_p of the best linear (OU) description of the data. Why,
for constant D (project units): for any vector field θ,

    0 ≤ E[(f_irr − ½Dθ)ᵀ (D/2)⁻¹ (f_irr − ½Dθ)]   ⇒   Φ = E[f_irrᵀ(D/2)⁻¹f_irr] ≥ 2E[θᵀf_irr] − ½E[θᵀDθ].

Take θ = K z (linear). E[f_irr zᵀ] = ∫ J zᵀ dz is the antisymmetric part A of E[f zᵀ] (∫ J zᵀ
is antisymmetric by stationarity, and E[f_rev zᵀ] = ½∫ ∇·(Dp) zᵀ = −½E[D] is symmetric), so the
bound is 2 tr(KᵀA) − ½ tr(KᵀDKS), largest at K = 2D⁻¹AS⁻¹, where it equals 2 tr(S⁻¹AᵀD⁻¹A). For
the OU fitted to the same S and A (B̂ = −E[f zᵀ]S⁻¹, so Q̂ = B̂S − D̂/2 = −A and D̂ = E[D]) this is
exactly its closed form Φ = 2 tr(S⁻¹Q̂ᵀD̂⁻¹Q̂) (docs/irreversibility.md §2.1 item 4). Hence
AR(1) and the lagged-covariance fit, at short lags and with enough data, approach this bound from
the data's S and A = −lim (C(τ) − C(τ)ᵀ)/(2τ), and are ≤ Φ; they equal Φ for an OU process.
Caveats: with state-dependent D the bound needs ½E[zᵀKᵀD(z)Kz] where the fit uses
½ tr(KᵀE[D]KS) — then it is a lower-bound-type estimate, not a theorem; finite samples bias Φ̂
upward (see each docstring and :func:`shuffled_surrogate`). The two-time KL rate is ≤ Φ by data
processing (§4.3).

Bias and spread quoted in the docstrings were measured on the rotation OU B = I + J, D = 2I
(Φ = 2, S = I, correlation time 1) sampled *exactly* (z_{n+1} = e^{−BΔt} z_n + N(0, S − e^{−BΔt} S
e^{−BᵀΔt}), stationary start). "T_tot" is the total observed time (trials × T × Δt); numbers are
mean ± standard deviation over independent seeds: 200 seeds (each 20 trials) where marked [200],
otherwise 40 seeds of one trajectory. The spread scales like 1/√T_tot.
"""
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.linalg import expm, logm

from ..errors import DDMError, positive
from .linear import OUStationary, check_spd, ou_stationary

# Which estimators give (an estimate of) a lower bound of Φ rather than Φ (module docstring).
LOWER_BOUNDS = ("ar1_epr", "lagged_covariance_epr", "gaussian_kl_rate")
LOWER_BOUND_NOTE = ("lower bound: the e_p of the best linear-Gaussian (OU) description of the "
                    "data, ≤ the true e_p for constant D (exact for OU processes); for nonlinear "
                    "systems it can be far below")

# Batches used for the standard error when there is only one trial (batch means).
_N_BATCHES = 10


# ------------------------------------------------------------------------------------------------
# input checks and shared statistics


def _trajectory(z, name="z"):
    """z as a float (trials, T, d) array; (T, d) is one trial."""
    z = np.asarray(z, dtype=float)
    if z.ndim == 2:
        z = z[None]
    if z.ndim != 3 or min(z.shape) == 0:
        raise DDMError(f"{name} must have shape (trials, T, d) or (T, d), got {np.shape(z)}")
    if not np.all(np.isfinite(z)):
        raise DDMError(f"{name} contains NaN or infinite values; drop the diverged trials first")
    return z


def _diffusion(D, d):
    """D as an SPD (d, d) array; a scalar means D = scalar · I."""
    D = np.asarray(D, dtype=float)
    if D.ndim == 0:
        D = float(D) * np.eye(d)
    return check_spd(D, d)


def _lag(lag, T):
    """The lag in samples (int ≥ 1, < T)."""
    if isinstance(lag, (bool, np.bool_)) or not isinstance(lag, (int, np.integer)) or lag < 1:
        raise DDMError(f"lag is a number of samples (an integer ≥ 1; τ = lag·dt), got {lag!r}")
    if lag >= T:
        raise DDMError(f"lag = {lag} samples is not shorter than the trajectories (T = {T}); "
                       "use a smaller lag or longer trajectories")
    return int(lag)


def _enough_pairs(n_pairs, d, what):
    # The d×d covariance fits need many more pairs than unknowns to be meaningful at all.
    need = max(10 * d * d, 20)
    if n_pairs < need:
        raise DDMError(f"too few samples for {what}: {n_pairs} pairs for d = {d} (need at least "
                       f"{need}, and far more for a usable EPR); pass longer or more trajectories")


def _mean_stderr(terms):
    """Mean of per-step terms (trials, n) and its standard error.

    Several trials: from the spread of the per-trial means (independent trials). One trial: batch
    means over _N_BATCHES contiguous blocks (valid when a block is much longer than the correlation
    time).
    """
    trials, n = terms.shape
    value = float(terms.mean())
    if trials >= 2:
        means = terms.mean(axis=1)
    elif n >= 2 * _N_BATCHES:
        means = terms[0, : n - n % _N_BATCHES].reshape(_N_BATCHES, -1).mean(axis=1)
    else:
        return value, float("nan")
    return value, float(means.std(ddof=1) / np.sqrt(means.size))


def _centered(z):
    """z minus its mean pooled over trials and time (one stationary law for every trial)."""
    return z - z.reshape(-1, z.shape[2]).mean(axis=0)


def _sample_cov(z):
    """Ŝ = E[z zᵀ] over all samples of a centred (trials, T, d) array."""
    flat = z.reshape(-1, z.shape[2])
    return flat.T @ flat / flat.shape[0]


def _covariances(z, lag):
    """Ŝ = E[z zᵀ] over all samples and Ĉ(lag) = E[z_{t+lag} z_tᵀ] over within-trial pairs.

    z must already be centred. Returns (S, C, number of pairs).
    """
    trials, T, d = z.shape
    S = _sample_cov(z)
    x = z[:, : T - lag].reshape(-1, d)
    y = z[:, lag:].reshape(-1, d)
    return S, y.T @ x / x.shape[0], x.shape[0]


def _real_logm(M, what, remedy):
    """The real principal matrix logarithm of M, or a DDMError saying why the inversion failed."""
    lam = np.linalg.eigvals(M)
    # A real eigenvalue ≤ 0 has no real logarithm (complex pairs of a real matrix are fine).
    if np.any((np.abs(lam.imag) < 1e-12 * np.abs(lam).max()) & (lam.real <= 0)):
        worst = lam[np.argmin(lam.real)].real
        raise DDMError(f"{what} has the real eigenvalue {worst:.3g} ≤ 0, so it has no real "
                       "logarithm: the sampling interval is too coarse compared with the "
                       "relaxation/rotation times (the samples are nearly uncorrelated), the "
                       f"series is too short, or the data are not OU-like; {remedy}")
    with warnings.catch_warnings():
        # scipy warns about its own error estimate; the round-trip check below is what we trust.
        warnings.simplefilter("ignore", RuntimeWarning)
        L = logm(M)
    if np.iscomplexobj(L):
        if np.max(np.abs(L.imag)) > 1e-8 * max(np.max(np.abs(L.real)), 1.0):
            raise DDMError(f"the logarithm of {what} is not real: the sampling interval is too "
                           "coarse (a rotation of more than π per step aliases) or the data are "
                           f"not OU-like; {remedy}")
        L = L.real
    if not np.all(np.isfinite(L)):
        raise DDMError(f"the logarithm of {what} is not finite: it is (nearly) singular, i.e. "
                       f"the samples are almost uncorrelated at this interval; {remedy}")
    if np.linalg.norm(expm(L) - M) > 1e-6 * np.linalg.norm(M):
        raise DDMError(f"the logarithm of {what} is inaccurate (expm(logm) differs from it): it "
                       f"is nearly singular or defective; {remedy}")
    return L


def _fitted_ou(B, D, what):
    """OU closed form of a fitted (B̂, D̂), with errors phrased for fits rather than for inputs."""
    why = ("the fitted linear model is not a valid stationary OU process: the data are too short, "
           "not stationary, not OU-like, or sampled too coarsely")
    worst = np.linalg.eigvals(B).real.min()
    if worst <= 0:
        raise DDMError(f"{what}: the fitted drift matrix B̂ has an eigenvalue with Re λ = "
                       f"{worst:.3g} ≤ 0; {why}")
    D = 0.5 * (D + D.T)
    smallest = np.linalg.eigvalsh(D)[0]
    if smallest <= 0:
        raise DDMError(f"{what}: the fitted diffusion D̂ is not positive definite (smallest "
                       f"eigenvalue {smallest:.3g}); {why}")
    try:
        return ou_stationary(B, D)
    except DDMError as err:
        raise DDMError(f"{what}: {err}; {why}") from None


# ------------------------------------------------------------------------------------------------
# estimators that use the drift


def ensemble_epr(f, div_f, D):
    """Φ = E_ps[2 fᵀ D⁻¹ f + ∇·f] from stationary samples (docs/irreversibility.md §3.1 (b)).

    Needs only the drift f and its divergence at samples of the stationary law (constant D), not the
    density. f has shape (K, d) (iid samples) or (trials, T, d) (trajectories); div_f has the
    leading shape, (K,) or (trials, T). D is (d, d) SPD, or a scalar for D = scalar·I.

    Returns (value, stderr). The standard error is the iid one, std/√K, for (K, d) input; for
    (trials, T, d) input it comes from the spread of the per-trial means (trials are independent,
    samples within a trial are not), or from batch means of one trial.

    Bias and spread: no discretisation bias — the estimator is exact in expectation for exact
    stationary samples (time correlation only inflates the variance). On iid N(0, S) samples of the
    rotation OU the per-sample standard deviation is 4 (the term is 2|z|² − 2, |z|² ~ χ²₂), so
    stderr = 4/√K: measured 1.992 ± 0.040 at K = 10⁴ and 1.9992 ± 0.0124 at K = 10⁵ (40 seeds;
    mean reported stderr 0.040 and 0.0127). On one exact trajectory with batch-means stderr:
    Δt = 0.01: 2.02 ± 0.32 at T_tot = 200 (mean stderr 0.28), 2.00 ± 0.10 at T_tot = 2000 (0.091);
    Δt = 0.1, T_tot = 2000: 2.00 ± 0.10.
    """
    f = np.asarray(f, dtype=float)
    div_f = np.asarray(div_f, dtype=float)
    if f.ndim not in (2, 3) or min(f.shape) == 0:
        raise DDMError(f"f must have shape (K, d) or (trials, T, d), got {f.shape}")
    if div_f.shape != f.shape[:-1]:
        raise DDMError(f"div_f must have the leading shape of f, {f.shape[:-1]}, got {div_f.shape}")
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(div_f))):
        raise DDMError("f or div_f contains NaN or infinite values; drop the diverged samples")
    Dinv = np.linalg.inv(_diffusion(D, f.shape[-1]))
    terms = 2.0 * np.einsum("...i,ij,...j->...", f, Dinv, f) + div_f
    if f.ndim == 3:
        return _mean_stderr(terms.reshape(terms.shape[0], -1))
    if terms.size < 2:
        raise DDMError("ensemble_epr needs at least 2 samples for a standard error")
    return float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(terms.size))


def stratonovich_epr(z, f, D, dt):
    """Φ = ⟨D_p⁻¹ f(z) ∘ ż⟩, D_p⁻¹ = 2 D⁻¹: Stratonovich time average
    (docs/irreversibility.md §3.1 (c)).

    Discretised as the mean over steps of ½[2D⁻¹f(z_n) + 2D⁻¹f(z_{n+1})]·(z_{n+1} − z_n) / dt,
    within each trial. z and f = f(z) have shape (trials, T, d) (or (T, d)); D is (d, d) SPD or a
    scalar.

    Returns (value, stderr); the standard error comes from the per-trial means (batch means for a
    single trial).

    Bias and spread: O(dt) bias. For a linear drift f = −Bz on a path sampled exactly the
    expectation is −tr(Bᵀ D⁻¹ (C − Cᵀ))/dt with C = e^{−BΔt}S, i.e. 2w e^{−Δt} sin(wΔt)/Δt for the
    rotation: 1.980 at Δt = 0.01 (−1 %) and 1.807 at Δt = 0.1 (−10 %). Euler–Maruyama paths add
    their own O(dt) bias (§3.1). The spread is ≈ √(8/T_tot) for the rotation (the martingale part
    has variance 2E[fᵀD_p⁻¹f] = 8 per unit time), and the reported stderr matches it.
    Measured [200]:
    Δt = 0.01: 1.985 ± 0.22 (T_tot = 200), 1.982 ± 0.061 (T_tot = 2000);
    Δt = 0.1:  1.80 ± 0.19 (T_tot = 200),  1.804 ± 0.064 (T_tot = 2000).
    """
    z = _trajectory(z)
    f = _trajectory(f, "f")
    if f.shape != z.shape:
        raise DDMError(f"f must be the drift at the samples, shape {z.shape}, got {f.shape}")
    dt = positive(dt, "dt")
    if z.shape[1] < 2:
        raise DDMError("stratonovich_epr needs trajectories of at least 2 samples")
    g = 2.0 * f @ np.linalg.inv(_diffusion(D, z.shape[2]))       # rows (2 D⁻¹ f)ᵀ, D symmetric
    terms = np.einsum("kti,kti->kt", 0.5 * (g[:, 1:] + g[:, :-1]), np.diff(z, axis=1)) / dt
    return _mean_stderr(terms)


# ------------------------------------------------------------------------------------------------
# data-only estimators: fit a linear model, then the closed form


@dataclass(frozen=True)
class AR1Result:
    """AR(1) fit z_{n+1} = A z_n + ε and the OU it implies (docs/irreversibility.md §4.1).

    epr: Φ of the fitted OU; B, D, S: its drift matrix, diffusion and stationary covariance;
    A, Sigma: the AR(1) matrix and residual covariance; stationary: the full
    :class:`~ddm_numba.analysis.linear.OUStationary`; inversion: "exact" or "euler".
    """

    epr: float
    B: np.ndarray
    D: np.ndarray
    S: np.ndarray
    A: np.ndarray
    Sigma: np.ndarray
    dt: float
    inversion: str
    n_pairs: int
    stationary: OUStationary


def ar1_epr(z, dt, inversion="exact"):
    """EPR of the OU fitted by least-squares AR(1) (docs/irreversibility.md §4.1).

    Fit z_{n+1} = Â z_n + ε on within-trial pairs (mean removed), Â = Ĉ(Δt) Ĉ(0)⁻¹ over the pairs,
    residual covariance Σ̂. Then

        "exact":  B̂ = −logm(Â)/Δt,  D̂ = B̂ Ŝ + Ŝ B̂ᵀ  (Ŝ the sample covariance; no Euler bias)
        "euler":  B̂ = (I − Â)/Δt,   D̂ = Σ̂/Δt         (the author's; residual cov ≈ D Δt)

    and Φ̂ = Φ(B̂, D̂) by :func:`~ddm_numba.analysis.linear.ou_stationary`. A DDMError is raised
    when logm(Â) is not real and finite (Δt too coarse for the dynamics, or data not OU-like) or
    the fitted OU is not stable/SPD.

    Bias and spread (measured, rotation OU, Φ = 2). Φ̂ is quadratic in the noisy antisymmetric part
    of B̂, so noise biases it upward by about the surrogate floor (≈ 4/T_tot, see
    :func:`shuffled_surrogate`); this is small next to the spread unless T_tot is only a few
    relaxation times. The spread follows var Φ̂ ≈ 20/T_tot · (e^{2Δt} − 1)/(2Δt) (asymptotic: var
    B̂_ij ≈ D_ii (S⁻¹)_jj (e^{2Δt} − 1)/(2Δt T_tot) for the least-squares fit, propagated through
    Φ = 2w²/a, ∂Φ/∂w = 4, ∂Φ/∂a = −2):

        Δt    T_tot        exact             euler             theory sd
        0.01  20           2.63 ± 1.24       2.56 ± 1.19       1.00
        0.01  200  [200]   2.04 ± 0.35       2.00 ± 0.34       0.32
        0.01  2000 [200]   2.004 ± 0.098     1.964 ± 0.095     0.10
        0.1   200  [200]   2.04 ± 0.34       1.66 ± 0.27       0.33
        0.1   2000 [200]   2.000 ± 0.108     1.637 ± 0.087     0.105

    The Euler inversion carries an O(Δt) bias (−2 % at Δt = 0.01, −18 % at Δt = 0.1); use "exact".
    """
    if inversion not in ("exact", "euler"):
        raise DDMError(f"inversion must be 'exact' or 'euler', got {inversion!r}")
    z = _centered(_trajectory(z))
    dt = positive(dt, "dt")
    trials, T, d = z.shape
    if T < 2:
        raise DDMError("ar1_epr needs trajectories of at least 2 samples")
    S = _sample_cov(z)
    x = z[:, :-1].reshape(-1, d)
    y = z[:, 1:].reshape(-1, d)
    _enough_pairs(x.shape[0], d, "the AR(1) fit")
    # Least squares y ≈ A x:  A = (yᵀx)(xᵀx)⁻¹, solved without forming the inverse.
    A = np.linalg.solve(x.T @ x, x.T @ y).T
    resid = y - x @ A.T
    Sigma = resid.T @ resid / x.shape[0]
    if inversion == "exact":
        B = -_real_logm(A, "the AR(1) matrix Â",
                        "sample more finely, pass more data, or use inversion='euler'") / dt
        # D̂ from the Lyapunov equation of the fitted B̂ and the sample covariance
        st = _fitted_ou(B, B @ S + S @ B.T, "AR(1) fit (exact inversion)")
    else:
        B = (np.eye(d) - A) / dt
        st = _fitted_ou(B, Sigma / dt, "AR(1) fit (Euler inversion)")
    return AR1Result(epr=st.epr, B=B, D=st.D, S=st.S, A=A, Sigma=Sigma, dt=dt,
                     inversion=inversion, n_pairs=int(x.shape[0]), stationary=st)


@dataclass(frozen=True)
class LaggedAsymmetry:
    """Lagged covariance and its antisymmetric part (docs/irreversibility.md §4.2).

    S: Ŝ = E[z zᵀ]; C: Ĉ(τ) = E[z_{t+τ} z_tᵀ] (mean removed); asymmetry: Ĉ − Ĉᵀ (signed, 0 in
    expectation for reversible processes); Q_hat: −(Ĉ − Ĉᵀ)/(2τ) (Onsager estimate, Q + O(τ) for
    OU); tau = lag·dt.
    """

    S: np.ndarray
    C: np.ndarray
    asymmetry: np.ndarray
    Q_hat: np.ndarray
    tau: float
    lag: int
    n_pairs: int


def lagged_asymmetry(z, dt, lag=1):
    """Signed asymmetry of the lagged covariance Ĉ(τ) − Ĉ(τ)ᵀ, τ = lag·dt
    (docs/irreversibility.md §4.2).

    Time reversal maps C(τ) → C(τ)ᵀ, so a nonzero C − Cᵀ is a model-free signature of
    irreversibility (a squared/MI-type measure is blind to pure rotations; this one is signed).
    For the OU, C(τ) − C(τ)ᵀ = −2τQ + O(τ²), hence Q̂ = −(C − Cᵀ)/(2τ).

    Bias and spread (rotation OU, Q₁₂ = −1): E[Q̂₁₂] = −e^{−τ} sin τ / τ exactly (−0.9900 at
    τ = 0.01, −0.9033 at τ = 0.1: an O(τ) bias towards 0). The spread is ≈ √(2/T_tot) for τ ≪ 1,
    nearly independent of τ. Measured [200]: τ = 0.01: −0.992 ± 0.108 (T_tot = 200),
    −0.991 ± 0.030 (T_tot = 2000); τ = 0.1: −0.900 ± 0.096 (200), −0.902 ± 0.032 (2000).
    """
    z = _centered(_trajectory(z))
    dt = positive(dt, "dt")
    lag = _lag(lag, z.shape[1])
    S, C, n_pairs = _covariances(z, lag)
    _enough_pairs(n_pairs, z.shape[2], "the lagged covariance")
    tau = lag * dt
    asym = C - C.T
    return LaggedAsymmetry(S=S, C=C, asymmetry=asym, Q_hat=-asym / (2.0 * tau), tau=tau, lag=lag,
                           n_pairs=int(n_pairs))


@dataclass(frozen=True)
class LaggedCovarianceResult:
    """OU fitted from the lagged covariance (docs/irreversibility.md §4.2); see
    :class:`LaggedAsymmetry`.

    epr: Φ(B̂, D̂); B: −logm(Ĉ Ŝ⁻¹)/τ; D: B̂ Ŝ + Ŝ B̂ᵀ; stationary: the OUStationary of (B̂, D̂).
    """

    epr: float
    B: np.ndarray
    D: np.ndarray
    S: np.ndarray
    C: np.ndarray
    asymmetry: np.ndarray
    Q_hat: np.ndarray
    tau: float
    lag: int
    stationary: OUStationary


def lagged_covariance_epr(z, dt, lag=1):
    """EPR of the OU whose lagged covariance matches the data, τ = lag·dt
    (docs/irreversibility.md §4.2).

    For an OU, C(τ) = e^{−Bτ} S, so B̂ = −logm(Ĉ(τ) Ŝ⁻¹)/τ recovers B at any τ (no Euler bias), and
    D̂ = B̂ Ŝ + Ŝ B̂ᵀ; Φ̂ = Φ(B̂, D̂). Also returns the signed asymmetry Ĉ − Ĉᵀ and the Onsager
    estimate Q̂ = −(Ĉ − Ĉᵀ)/(2τ) (see :func:`lagged_asymmetry`). With lag = 1 this is the exact
    AR(1) estimator up to how the covariances are pooled.

    Bias and spread (rotation OU, Φ = 2, relaxation time 1): no Euler bias at any τ; the noise bias
    and spread are those of :func:`ar1_epr` for τ ≲ 0.5 and grow beyond. Measured (40 seeds):

        Δt = 0.01, T_tot = 200:   lag 1: 1.98 ± 0.29   lag 10: 1.99 ± 0.30   lag 50: 2.01 ± 0.35
        Δt = 0.01, T_tot = 2000:  lag 1: 1.99 ± 0.12   lag 10: 2.00 ± 0.12   lag 50: 2.01 ± 0.15
        Δt = 0.1,  T_tot = 2000:  lag 1: 2.01 ± 0.11   lag 5:  2.01 ± 0.12   lag 10: 2.01 ± 0.15

    At τ = 5 (Δt = 0.1, lag 50) Ĉ is mostly noise and most seeds raise the DDMError below. A
    DDMError is raised when logm is not real/finite/accurate (τ too long for the data: a rotation
    of more than π per lag, or Ĉ nearly singular) or the implied D̂ is not SPD.
    """
    la = lagged_asymmetry(z, dt, lag)
    CS = np.linalg.solve(la.S, la.C.T).T               # Ĉ Ŝ⁻¹ (Ŝ symmetric)
    B = -_real_logm(CS, "Ĉ(τ) Ŝ⁻¹", "use a smaller lag or more data") / la.tau
    st = _fitted_ou(B, B @ la.S + la.S @ B.T, "lagged-covariance fit")
    return LaggedCovarianceResult(epr=st.epr, B=B, D=st.D, S=st.S, C=la.C, asymmetry=la.asymmetry,
                                  Q_hat=la.Q_hat, tau=la.tau, lag=la.lag, stationary=st)


def gaussian_two_time_kl(S, C):
    """KL( N(0, Σ_f) ‖ N(0, Σ_r) ) with Σ_f = [[S, Cᵀ], [C, S]], Σ_r = [[S, C], [Cᵀ, S]] (§4.3).

    The joint law of (z_t, z_{t+τ}) against that of the time-reversed pair. The two determinants
    are equal, so KL = ½ tr(Σ_r⁻¹ Σ_f) − d. Raises DDMError if Σ_f is not positive definite.
    """
    S, C = np.asarray(S, dtype=float), np.asarray(C, dtype=float)
    d = S.shape[0]
    Sf = np.block([[S, C.T], [C, S]])
    Sr = np.block([[S, C], [C.T, S]])
    try:
        L = np.linalg.cholesky(Sr)
    except np.linalg.LinAlgError:
        raise DDMError("the two-time covariance [[S, C], [Cᵀ, S]] is not positive definite: the "
                       "estimate of C(τ) is inconsistent with S (too few samples?)") from None
    # tr(Σ_r⁻¹ Σ_f) via the Cholesky factor, better conditioned than an explicit inverse.
    Linv_Sf = np.linalg.solve(L, Sf)
    return 0.5 * float(np.trace(np.linalg.solve(L.T, Linv_Sf))) - d


def gaussian_kl_rate(z, dt, lag=1):
    """Gaussian two-time KL rate KL(P(z_t, z_{t+τ}) ‖ P(z_{t+τ}, z_t)) / τ, τ = lag·dt (§4.3).

    For a stationary Markov process this is ≤ Φ (data processing) and → Φ as τ → 0; for non-
    Gaussian data the Gaussian version is a heuristic, not a bound. Uses Ŝ and Ĉ(τ) from the data
    in :func:`gaussian_two_time_kl`. For the rotation OU the exact value is
    4 sin²(wτ)/(e^{2τ} − 1)/τ (1.800648 at τ = 0.1, 1.980001 at τ = 0.01).

    Returns the rate (float).

    Bias and spread (rotation OU, measured): the estimate is biased upward by noise (the KL is
    quadratic in Ĉ − Ĉᵀ; ≈ the surrogate floor 4/T_tot) and sits below Φ by the O(τ) bound gap:

        Δt = 0.01, lag 1  (exact 1.980):  T_tot = 200: 2.02 ± 0.35 [200];  2000: 1.984 ± 0.097 [200]
        Δt = 0.01, lag 10 (exact 1.801):  T_tot = 200: 1.79 ± 0.27;        2000: 1.80 ± 0.11
        Δt = 0.1,  lag 1  (exact 1.801):  T_tot = 200: 1.84 ± 0.31 [200];  2000: 1.800 ± 0.100 [200]
        Δt = 0.1,  lag 10 (exact 0.443):  T_tot = 200: 0.45 ± 0.12;        2000: 0.441 ± 0.039

    The spread ≈ that of :func:`ar1_epr`: the lower bound is only useful once T_tot is large.
    """
    la = lagged_asymmetry(z, dt, lag)
    return gaussian_two_time_kl(la.S, la.C) / la.tau


# ------------------------------------------------------------------------------------------------
# surrogates


@dataclass(frozen=True)
class SurrogateResult:
    """What an estimator gives on time-arrow-free surrogate data (see :func:`shuffled_surrogate`).

    value: the headline number (epr, rate, value; for lagged_asymmetry the matrix Ĉ − Ĉᵀ);
    stderr: the estimator's own standard error if it gives one, else NaN; result: its full output;
    method: "reverse_blocks" or "permute"; segments, segment_length: the blocks used.
    """

    value: object
    stderr: float
    result: object
    method: str
    segments: int
    segment_length: int


def _headline(out):
    """(value, stderr) of any estimator's output."""
    if isinstance(out, tuple):
        return out[0], out[1]
    if isinstance(out, LaggedAsymmetry):
        return out.asymmetry, float("nan")
    if hasattr(out, "epr"):
        return out.epr, float("nan")
    return out, float("nan")


def _blocks(arrays, segments, min_len):
    """Cut each trial into equal blocks (≈ ``segments`` in all, default ≥ 16): blocks → trials."""
    trials, T = arrays[0].shape[:2]
    per_trial = max(1, -(-(segments or 16) // trials))
    L = T // per_trial
    if L < min_len:
        raise DDMError(f"trajectories of {T} samples are too short to cut into {per_trial} blocks "
                       f"of at least {min_len} samples; pass fewer segments or longer trials")
    n = trials * per_trial
    return [a[:, : per_trial * L].reshape(n, L, a.shape[2]) for a in arrays], n, L


def _reverse_half(blocks, rng):
    """Time-reverse a random half of the blocks (the same ones in every array)."""
    n = blocks[0].shape[0]
    flip = np.zeros(n, dtype=bool)
    # Exactly half the blocks (a random one more if n is odd): the forward and reversed parts then
    # balance, so the surrogate's Ĉ − Ĉᵀ is 0 in expectation with the noise level of the original.
    flip[rng.permutation(n)[: n // 2 + (n % 2) * int(rng.integers(2))]] = True
    out = []
    for b in blocks:
        b = b.copy()
        b[flip] = b[flip, ::-1]
        out.append(b)
    return out


def _permute(arrays, rng):
    """Randomly permute the time indices of each trial (the same permutation for every array)."""
    trials, T = arrays[0].shape[:2]
    perms = np.stack([rng.permutation(T) for _ in range(trials)])
    rows = np.arange(trials)[:, None]
    return [a[rows, perms] for a in arrays], trials, T


def shuffled_surrogate(estimator, z, dt, seed, method="reverse_blocks", segments=None, **kw):
    """Apply a trajectory estimator to the same samples with the arrow of time destroyed.

    The surrogate keeps every sample (hence the stationary law) and has expected EPR 0, so what the
    estimator returns there is its finite-sample floor: an estimate is only meaningful if it clearly
    exceeds the surrogate's spread (docs/irreversibility.md §4.1, §4.5, §7 "always report a
    surrogate").

    ``estimator`` is one of stratonovich_epr (then pass f=..., D=...; f is rearranged with z),
    ar1_epr, lagged_asymmetry, lagged_covariance_epr, gaussian_kl_rate (pass their keyword
    arguments: inversion, lag). ``ensemble_epr`` is refused: it uses no time order, so shuffling
    leaves it unchanged — use a reversible control system for it instead.

    Methods
    -------
    "reverse_blocks" (default, sensible for every estimator here): cut each trial into blocks
        (``segments`` in total, default ≥ 16), time-reverse a random half of them and treat every
        block as a trial (no pair straddles a cut). Reversal maps Ĉ(τ) → Ĉ(τ)ᵀ, so the surrogate's
        lagged covariance is symmetric in expectation (Q = 0, every pair law reversible), while the
        autocorrelation — and so the noise level of the estimator — is kept. The AR(1)/logm fits
        stay well defined (Â ≈ e^{−B_sym Δt}, not 0), and the Stratonovich sum of a reversed block
        is exactly minus its forward sum, so its null mean is 0 with the original variance.
    "permute": a random permutation of the time indices within each trial, i.e. every sample is
        paired with a randomly drawn other sample of its trial. This destroys all time correlation,
        not only its antisymmetric part: Ĉ(τ) → 0, so Â ≈ 0 and logm(Â) is ill-defined. ar1_epr
        (exact) and lagged_covariance_epr then either raise a DDMError (a real eigenvalue ≤ 0) or
        fit huge decay rates and give erratic values (0.002 to 0.7 over 5 seeds at Δt = 0.01,
        T_tot = 2000, where the reverse_blocks floor is 0.0016 ± 0.0021). The Stratonovich terms
        become O(1)/dt (stderr 0.3 instead of 0.066 there). It only makes sense for
        lagged_asymmetry (null of the signed Ĉ − Ĉᵀ of uncorrelated pairs) and gaussian_kl_rate,
        and even there its null spread is not that of correlated data (5× too wide for Ĉ − Ĉᵀ at
        Δt = 0.01, below).

    For stratonovich_epr the reported stderr is that of the un-reversed blocks (the surrogate's
    own per-block means are ±Φ̂ + noise, whose spread says nothing about the null).

    Measured on the rotation OU (Φ = 2; reverse_blocks with 16 blocks unless said; 40 seeds of one
    trajectory, [200] as in the module docstring):

        ar1_epr exact      Δt = 0.01: T_tot = 20: 0.16 ± 0.26;  200: 0.015 ± 0.021
                                      2000: 0.0016 ± 0.0021;   [200] 200: 0.021 ± 0.028,
                                      [200] 2000: 0.0018 ± 0.0025
                           Δt = 0.1:  [200] 200: 0.020 ± 0.030;  [200] 2000: 0.0020 ± 0.0033
        gaussian_kl_rate   Δt = 0.01, lag 1: 200: 0.015 ± 0.021;  2000: 0.0016 ± 0.0021
        lagged_cov_epr     lag 10, Δt = 0.01: 200: 0.016 ± 0.023;
                           lag 10, Δt = 0.1 (τ = 1): 200: 0.09 ± 0.10, 2000: 0.010 ± 0.012
        stratonovich_epr   Δt = 0.01: 200: −0.007 ± 0.17 (stderr 0.19);
                                      2000: −0.004 ± 0.056 (stderr 0.066)
        lagged_asymmetry   (Ĉ − Ĉᵀ)₁₂, lag 1, Δt = 0.01, T_tot = 200: data 0.0196 ± 0.0020;
                           reverse_blocks 0.0000 ± 0.0018; permute −0.001 ± 0.011

    So the EPR-type nulls are positive because Φ̂ is quadratic in noise. For the rotation,
    Φ̂ ≈ 2 Q̂₁₂² with Q̂₁₂ ~ N(0, 2/T_tot) on the surrogate, i.e. Φ̂_null ≈ (4/T_tot) χ²₁
    (mean 4/T_tot, sd 5.7/T_tot), as measured. The reverse_blocks null of Ĉ − Ĉᵀ has the spread
    of the data's own estimate.

    Returns a :class:`SurrogateResult` (value, stderr, the estimator's full output, method, blocks).
    """
    table = {stratonovich_epr: "f", ar1_epr: None, lagged_asymmetry: None,
             lagged_covariance_epr: None, gaussian_kl_rate: None}
    if estimator is ensemble_epr:
        raise DDMError("ensemble_epr uses only the stationary law, not the time order, so a "
                       "time-shuffled surrogate leaves it unchanged; check it on a reversible "
                       "control system instead")
    if estimator not in table:
        raise DDMError("shuffled_surrogate supports stratonovich_epr, ar1_epr, lagged_asymmetry, "
                       f"lagged_covariance_epr and gaussian_kl_rate, not {estimator!r}")
    z = _trajectory(z)
    arrays = [z]
    extra = table[estimator]
    if extra is not None:
        if extra not in kw:
            raise DDMError(f"{estimator.__name__} needs {extra}=... (evaluated at the samples z)")
        arrays.append(_trajectory(kw[extra], extra))
        if arrays[1].shape != z.shape:
            raise DDMError(f"{extra} must have the shape of z, {z.shape}, got {arrays[1].shape}")
    rng = np.random.default_rng(seed)

    def apply(arrays):
        extra_kw = {} if extra is None else {extra: arrays[1]}
        return estimator(arrays[0], dt=dt, **dict(kw, **extra_kw))

    if method == "reverse_blocks":
        blocks, n, L = _blocks(arrays, segments, max(2 * int(kw.get("lag", 1)) + 2, 4))
        out = apply(_reverse_half(blocks, rng))
        value, stderr = _headline(out)
        if isinstance(out, tuple):
            # The per-block means of the surrogate are ±Φ̂ + noise, so their spread says nothing
            # about the null. Its spread is that of the forward blocks' noise: the forward stderr.
            stderr = apply(blocks)[1]
    elif method == "permute":
        arrays, n, L = _permute(arrays, rng)
        out = apply(arrays)
        value, stderr = _headline(out)
    else:
        raise DDMError(f"method must be 'reverse_blocks' or 'permute', got {method!r}")
    return SurrogateResult(value=value, stderr=stderr, result=out, method=method, segments=n,
                           segment_length=L)
