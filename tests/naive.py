"""Reference kernels that only the tests use (stumpy's naive.py): the same quantities as the
package's fast forms, computed the plain way, sample by sample.

    full_drift_loss_grad     the full-connectivity drift loss per sample (matching.FullGram is
                             its Gram form, O(N³) per evaluation whatever K)
    full_loss_grad_samples   the same on a DriftData and the network's matrices
"""
import numpy as np


def full_drift_loss_grad(z, u, f, lam, WT, b, BinT, MT, c, P, Q, lam_perp, tau):
    """Full-connectivity drift loss (docs/model.md §3b, §4d) per sample, and its gradient in W, b,
    B_in; numpy only (φ = np.tanh), so it shares no code with the package's kernels.

    With h_k = M z_k + c (fixed embedding), F_k = (1/τ)[−h_k + W φ(h_k) + b + B_in u_k]:
        r_k = P F_k − f_k,      F⊥_k = Q F_k
        L   = (1/K) Σ_k [ Σ_a Λ_a r_ka² + λ⊥ ‖F⊥_k‖² ]
    Q is a symmetric idempotent projector, so ∂‖Q F‖²/∂F = 2 Q F = 2 F⊥. Hence
        g_k = ∂L/∂F_k = (2/K) [ Pᵀ (Λ ⊙ r_k) + λ⊥ F⊥_k ]
        ∂L/∂W = (1/τ) Σ_k g_k φ(h_k)ᵀ,  ∂L/∂b = (1/τ) Σ_k g_k,  ∂L/∂B_in = (1/τ) Σ_k g_k u_kᵀ.
    Returns (L, ∂L/∂Wᵀ, ∂L/∂b, ∂L/∂B_inᵀ).
    """
    K = z.shape[0]
    H = z @ MT + c                       # (K, N): h_k as rows
    Phi = np.tanh(H)
    F = (Phi @ WT + u @ BinT - H + b) / tau
    r = F @ P.T - f
    Fp = F @ Q
    loss = float(np.sum(lam * r * r) + lam_perp * np.sum(Fp * Fp)) / K
    G = ((lam * r) @ P + lam_perp * Fp) * (2.0 / (K * tau))
    return loss, Phi.T @ G, G.sum(axis=0), u.T @ G


def full_loss_grad_samples(data, W, b, B_in, M, c, P, Q, lam_perp):
    """The loss of matching.FullGram, evaluated sample by sample: (L, ∂L/∂Wᵀ, ∂L/∂b, ∂L/∂B_inᵀ)."""
    def cont(a):
        return np.ascontiguousarray(a, dtype=np.float64)
    return full_drift_loss_grad(data.z, data.u, data.f, data.lam, cont(W.T), cont(b), cont(B_in.T),
                                cont(M.T), cont(c), cont(P), cont(Q), float(lam_perp), data.tau)


def phi_em(x):
    """The sampler's activation (ddm_numba._jit.phi_em) in numpy: x P(x²)/Q(x²), x clamped to
    ±PHI_EM_CLAMP, from the coefficients alone."""
    from ddm_numba import _jit
    y = np.clip(x, -_jit.PHI_EM_CLAMP, _jit.PHI_EM_CLAMP)
    s = y * y
    p = np.polynomial.polynomial.polyval(s, (1.0,) + _jit.PHI_EM_P)
    q = np.polynomial.polynomial.polyval(s, (1.0,) + _jit.PHI_EM_Q)
    return y * p / q


def euler_maruyama(W, net, run, x0, states):
    """Euler–Maruyama for a network, trial by trial in numpy: the reference for the samplers.

        x ← x + (dt/τ)[−x + W φ̃(x) + b + B_in u] + √dt (M S(x) ξ + σ_p η),
        S(x) = S0 + Σ_j R[:, :, j] φ̃_j(x),
    with the draws of docs/model.md §6 from each trial's own stream (rng.fill_normals on that
    trial's row of ``states``: the m latent normals, then the N private ones, each in pairs).
    net: a backends.arrays.NetworkArrays with 2-D MT and P; W (N, N) dense. Records z = P (x − c)
    every ``every`` steps; a trial whose record is not finite stops there (blowup = that step).
    φ̃ is this module's ``phi_em`` (a test may put np.tanh in its place).
    Returns (z (trials, records, d), x (trials, records, N), blowup (trials,)).
    """
    trials, N = x0.shape
    T = run.n_steps // run.every + 1
    z_out, x_out = np.zeros((trials, T, net.S0.shape[0])), np.zeros((trials, T, N))
    blowup = np.full(trials, -1)
    with np.errstate(over="ignore", invalid="ignore"):   # the tests' overflowing trials
        for tr in range(trials):
            # states[tr:tr + 1] is a view: the draws advance the caller's states
            blowup[tr] = _trial(W, net, run, x0[tr].copy(), states[tr:tr + 1],
                                (z_out[tr], x_out[tr]))
    return z_out, x_out, blowup


def _trial(W, net, run, x, stream, records):
    """One trial of euler_maruyama; returns its blow-up step (−1 if none)."""
    from ddm_numba.rng import fill_normals
    z_out, x_out = records
    MT, P = np.asarray(net.MT), np.asarray(net.P)
    for step in range(run.n_steps + 1):
        if step % run.every == 0:
            z = P @ (x - net.c)
            z_out[step // run.every], x_out[step // run.every] = z, x
            if not np.all(np.isfinite(z)):
                return step
        if step == run.n_steps:
            return -1
        ph = phi_em(x)
        xi = np.empty((1, net.S0.shape[1]))
        fill_normals(stream, xi)
        S = net.S0 + np.einsum("aqj,j->aq", net.R, ph)
        drive = W @ ph + net.b + net.BinT.T @ run.U[step]
        x = x + run.dt / net.tau * (drive - x) + np.sqrt(run.dt) * (MT.T @ (S @ xi[0]))
        if net.sigma_p > 0:
            eta = np.empty((1, x.shape[0]))
            fill_normals(stream, eta)
            x = x + net.sigma_p * np.sqrt(run.dt) * eta[0]
    return -1
