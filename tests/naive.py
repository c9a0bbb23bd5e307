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
