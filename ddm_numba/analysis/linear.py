"""Ornstein–Uhlenbeck closed forms (docs/irreversibility.md §2, §4.6, §5.1–5.2).

Model (project convention, docs/model.md §1):  dz = −B z dt + g dB,  D = g gᵀ constant, no factor ½.
The physics diffusion of the papers is D_p = D/2. The entropy production rate (EPR)

    Φ = 2 E[f_irrᵀ D⁻¹ f_irr] = E[f_irrᵀ D_p⁻¹ f_irr]

is the same number in both conventions, and for linear systems it does not depend on the noise
level: Φ(B, cD) = Φ(B, D) (§2.1 item 8).
"""
from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_continuous_lyapunov

from ..errors import DDMError

# Relative size of B S + S Bᵀ − D (and of Q + Qᵀ) above which the Lyapunov solve is not trusted.
_LYAP_RTOL = 1e-8


@dataclass(frozen=True)
class OUStationary:
    """Stationary law and currents of dz = −B z dt + g dB, D = g gᵀ (docs/irreversibility.md §2.1).

    Attributes
    ----------
    B, D : (d, d)        the inputs, as float arrays
    S : (d, d)           stationary covariance, B S + S Bᵀ = D; the stationary law is N(0, S)
    Q : (d, d)           Onsager matrix B S − D/2 (antisymmetric; 0 ⇔ detailed balance)
    epr : float          Φ = −2 tr(D⁻¹ B Q)
    epr_check : float    Φ = 2 tr(S⁻¹ Qᵀ D⁻¹ Q), an independent second formula (≥ 0 manifestly)
    current_matrix : (d, d)     F = −Q S⁻¹:  f_irr(z) = F z,  J_s(z) = F z p_s(z)
    reversible_matrix : (d, d)  R = −(D/2) S⁻¹:  f_rev(z) = R z;  R + F = −B
    lyapunov_residual : float   ‖B S + S Bᵀ − D‖_F / ‖D‖_F of the solve (round-off size)
    """

    B: np.ndarray
    D: np.ndarray
    S: np.ndarray
    Q: np.ndarray
    epr: float
    epr_check: float
    current_matrix: np.ndarray
    reversible_matrix: np.ndarray
    lyapunov_residual: float


def _square(name, M, d=None):
    """M as a finite float (d, d) array, or a DDMError naming the argument."""
    M = np.asarray(M, dtype=float)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] == 0:
        raise DDMError(f"{name} must be a square (d, d) matrix, got shape {M.shape}")
    if d is not None and M.shape[0] != d:
        raise DDMError(f"{name} must have shape ({d}, {d}) to match the other inputs, "
                       f"got {M.shape}")
    if not np.all(np.isfinite(M)):
        raise DDMError(f"{name} contains NaN or infinite entries; pass finite numbers")
    return M


def check_stable(B):
    """B as a float array, or a DDMError if some eigenvalue has Re λ ≤ 0 (no stationary law)."""
    B = _square("B", B)
    lam = np.linalg.eigvals(B)
    worst = lam[np.argmin(lam.real)]
    if worst.real <= 0:
        raise DDMError(f"B is not stable: it has the eigenvalue {worst:.6g} with Re λ ≤ 0, so "
                       "dz = −B z dt + g dB has no stationary law; every eigenvalue of B needs "
                       "Re λ > 0 (for a linear network B = I − W: the eigenvalues of W need "
                       "Re < 1)")
    return B


def check_spd(D, d=None, name="D"):
    """D as a float array, or a DDMError if it is not symmetric positive definite."""
    D = _square(name, D, d)
    scale = max(float(np.max(np.abs(D))), 1e-300)
    if np.max(np.abs(D - D.T)) > 1e-10 * scale:
        raise DDMError(f"{name} is not symmetric (max |{name} − {name}ᵀ| = "
                       f"{np.max(np.abs(D - D.T)):.3g}); pass D = g gᵀ")
    D = 0.5 * (D + D.T)
    try:
        np.linalg.cholesky(D)
    except np.linalg.LinAlgError:
        lam = np.linalg.eigvalsh(D)
        raise DDMError(f"{name} is not positive definite (smallest eigenvalue {lam[0]:.3g}); "
                       "the closed forms need noise in every direction: pass an SPD D = g gᵀ "
                       "(add a small isotropic term if some direction is noiseless)") from None
    return D


def ou_stationary(B, D):
    """Stationary covariance, Onsager matrix, currents and EPR of an OU
    (docs/irreversibility.md §2.1).

    dz = −B z dt + g dB with D = g gᵀ (project convention). Implements §2.1 items 1–4:

        B S + S Bᵀ = D,   Q = B S − D/2 = ½(B S − S Bᵀ),
        Φ = −2 tr(D⁻¹ B Q) = 2 tr(S⁻¹ Qᵀ D⁻¹ Q),   f_irr = −Q S⁻¹ z,   f_rev = −(D/2) S⁻¹ z.

    Raises DDMError when B is not stable (some Re λ ≤ 0), D is not symmetric positive definite,
    the shapes disagree, or the Lyapunov solve is too inaccurate to trust (B nearly unstable).
    """
    B = check_stable(B)
    D = check_spd(D, B.shape[0])
    S = solve_continuous_lyapunov(B, D)
    S = 0.5 * (S + S.T)                  # the solver's S is symmetric only up to round-off
    resid = np.linalg.norm(B @ S + S @ B.T - D) / np.linalg.norm(D)
    Q = B @ S - 0.5 * D
    # Q + Qᵀ = B S + S Bᵀ − D: its size tells how far the solve is from the exact antisymmetric Q.
    skew = np.linalg.norm(Q + Q.T) / max(np.linalg.norm(B) * np.linalg.norm(S), np.linalg.norm(D))
    if not np.isfinite(resid) or resid > _LYAP_RTOL or skew > _LYAP_RTOL:
        raise DDMError(f"the Lyapunov equation B S + S Bᵀ = D could not be solved accurately "
                       f"(relative residual {resid:.2g}): B is nearly unstable or badly scaled; "
                       "rescale time or check B")
    Q = 0.5 * (Q - Q.T)                  # keep the exactly antisymmetric part
    Dinv_Q = np.linalg.solve(D, Q)
    epr = -2.0 * float(np.trace(np.linalg.solve(D, B @ Q)))
    epr_check = 2.0 * float(np.trace(np.linalg.solve(S, Q.T @ Dinv_Q)))
    S_inv = np.linalg.inv(S)
    return OUStationary(B=B, D=D, S=S, Q=Q, epr=epr, epr_check=epr_check,
                        current_matrix=-Q @ S_inv, reversible_matrix=-0.5 * D @ S_inv,
                        lyapunov_residual=float(resid))


def ou_epr_split(parts, D):
    """Split Φ along a split of the drift matrix, B = Σ_k B_k (docs/irreversibility.md §5.2, §5.3).

    Contribution of the drift part f_k = −B_k z:

        Φ_k = E[f_irrᵀ (D/2)⁻¹ f_k] = 2 tr(Fᵀ D⁻¹ (−B_k) S),   F = −Q S⁻¹  (z ~ N(0, S)).

    Because f_rev ⟂ f_irr in L²(p_s; D⁻¹), Σ_k Φ_k = 2 E[f_irrᵀ D⁻¹ f] = Φ. For a linear net
    B = (I − W_s) + (−W_a) with isotropic D the symmetric part contributes exactly 0 and the
    antisymmetric part all of Φ; with anisotropic D the symmetric part's share is generally ≠ 0.
    Single contributions may be negative.

    Returns a 1-D array (Φ_1, …, Φ_K); raises DDMError as :func:`ou_stationary` does, or if the
    parts are not square matrices of one size.
    """
    parts = [np.asarray(P, dtype=float) for P in parts]
    if not parts:
        raise DDMError("ou_epr_split needs at least one part B_k (B = Σ_k B_k)")
    d = parts[0].shape[0] if parts[0].ndim == 2 else None
    parts = [_square(f"part {k} of B", P, d) for k, P in enumerate(parts)]
    st = ou_stationary(sum(parts), D)
    # 2 Fᵀ D⁻¹ is shared by every part; the trace with (−B_k) S is then one product each.
    left = 2.0 * np.linalg.solve(st.D, st.current_matrix).T
    return np.array([float(np.trace(left @ (-P) @ st.S)) for P in parts])


def asymmetry(W):
    """Scalar symmetry measures of a square matrix W (docs/irreversibility.md §5.1).

    With W_s = (W + Wᵀ)/2 and W_a = (W − Wᵀ)/2 (orthogonal in Frobenius):

        a       = ‖W_a‖_F / ‖W‖_F ∈ [0, 1]        0 symmetric, 1 antisymmetric, → 1/√2 iid Gaussian
        eta     = tr(W²) / ‖W‖_F² ∈ [−1, 1]       symmetry index; a² = (1 − η)/2 exactly
        henrici = √(‖W‖_F² − Σ|λ_i|²) / ‖W‖_F     normalised departure from normality (0 for normal
                                                   W, 1 for a nilpotent feedforward chain)

    Returns a dict with "a", "eta", "henrici", "norm_W", "norm_W_s", "norm_W_a" (Frobenius norms;
    the keys match :func:`ddm_numba.analysis.connectivity.asymmetry_lowrank`). For W = 0 the ratios
    are 0/0: a DDMError is raised rather than returning NaNs.
    """
    W = _square("W", W)
    norm2 = float(np.sum(W * W))
    if norm2 == 0.0:
        raise DDMError("W is all zeros: its asymmetry ratios are 0/0 and undefined; "
                       "pass a nonzero connectivity")
    Ws, Wa = 0.5 * (W + W.T), 0.5 * (W - W.T)
    ns2, na2 = float(np.sum(Ws * Ws)), float(np.sum(Wa * Wa))
    lam = np.linalg.eigvals(W)
    # ‖W‖² ≥ Σ|λ|² (Schur); clip the round-off that can make the difference slightly negative.
    henrici2 = max(norm2 - float(np.sum(np.abs(lam) ** 2)), 0.0)
    return {"a": float(np.sqrt(na2 / norm2)), "eta": float(np.sum(W * W.T)) / norm2,
            "henrici": float(np.sqrt(henrici2 / norm2)), "norm_W": float(np.sqrt(norm2)),
            "norm_W_s": float(np.sqrt(ns2)), "norm_W_a": float(np.sqrt(na2))}
