"""Reference kernels that only the tests use (stumpy's naive.py): the same quantities as the
package's fast forms, computed the plain way, sample by sample.

    full_drift_loss_grad     the full-connectivity drift loss per sample (matching.FullGram is
                             its Gram form, O(N³) per evaluation whatever K)
    full_loss_grad_samples   the same on a DriftData and the network's matrices
"""
import numba
import numpy as np

from ddm_numba._jit import phi

BLOCK = 256


@numba.njit(cache=False)
def full_drift_loss_grad(z, u, f, lam, WT, b, BinT, MT, c, P, Q, lam_perp, tau):
    """Full-connectivity drift loss (docs/model.md §3b, §4d) per sample, and its gradient in W, b,
    B_in.

    With h_k = M z_k + c (fixed embedding), F_k = (1/τ)[−h_k + W φ(h_k) + b + B_in u_k]:
        r_k = P F_k − f_k,      F⊥_k = Q F_k
        L   = (1/K) Σ_k [ Σ_a Λ_a r_ka² + λ⊥ ‖F⊥_k‖² ]
    Q is a symmetric idempotent projector, so ∂‖Q F‖²/∂F = 2 Q F = 2 F⊥. Hence
        g_k = ∂L/∂F_k = (2/K) [ Pᵀ (Λ ⊙ r_k) + λ⊥ F⊥_k ]
        ∂L/∂W = (1/τ) Σ_k g_k φ(h_k)ᵀ,  ∂L/∂b = (1/τ) Σ_k g_k,  ∂L/∂B_in = (1/τ) Σ_k g_k u_kᵀ.
    Cost O(K N²) through BLAS on blocks of samples. Returns (L, ∂L/∂Wᵀ, ∂L/∂b, ∂L/∂B_inᵀ).
    (Training uses the equivalent Gram form, matching.FullGram; this is the reference it is
    tested against.)
    """
    K, d = z.shape
    N = c.shape[0]
    p = u.shape[1]
    loss = 0.0
    gWT = np.zeros((N, N))
    gb = np.zeros(N)
    gBinT = np.zeros((p, N))
    Phi_buf = np.empty((BLOCK, N))
    for start in range(0, K, BLOCK):
        stop = min(K, start + BLOCK)
        nk = stop - start
        Phi = Phi_buf[:nk]
        H = z[start:stop] @ MT
        for k in range(nk):
            for i in range(N):
                H[k, i] += c[i]
                Phi[k, i] = phi(H[k, i])
        F = Phi @ WT
        if p > 0:
            F += u[start:stop] @ BinT
        for k in range(nk):
            for i in range(N):
                F[k, i] = (F[k, i] - H[k, i] + b[i]) / tau
        Rr = F @ P.T
        Fp = F @ Q
        for k in range(nk):
            for a in range(d):
                r = Rr[k, a] - f[start + k, a]
                loss += lam[a] * r * r
                Rr[k, a] = lam[a] * r
            for i in range(N):
                loss += lam_perp * Fp[k, i] * Fp[k, i]
        Gk = (Rr @ P + lam_perp * Fp) * (2.0 / (K * tau))
        gWT += Phi.T @ Gk
        gb += Gk.sum(axis=0)
        if p > 0:
            gBinT += u[start:stop].T @ Gk
    return loss / K, gWT, gb, gBinT


def full_loss_grad_samples(data, W, b, B_in, M, c, P, Q, lam_perp):
    """The loss of matching.FullGram, evaluated sample by sample: (L, ∂L/∂Wᵀ, ∂L/∂b, ∂L/∂B_inᵀ)."""
    def cont(a):
        return np.ascontiguousarray(a, dtype=np.float64)
    return full_drift_loss_grad(data.z, data.u, data.f, data.lam, cont(W.T), cont(b), cont(B_in.T),
                                cont(M.T), cont(c), cont(P), cont(Q), float(lam_perp), data.tau)
