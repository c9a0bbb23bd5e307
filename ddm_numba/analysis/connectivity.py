"""The network's connectivity and the latent fields it makes (docs/model.md §9,
docs/irreversibility.md §5).

On the manifold x = M z + c the network's latent drift is, for either mode (P M = I),

    f_net(z) = P F(M z + c) = (1/τ) [ −z + G φ(h) + b_z + B_z u ],   G = P W (d×N),  h = M z + c

with G = A for low-rank models (P M A = A). Everything here is written through G, so that the same
code evaluates the drift of W, of its symmetric part W_s = (W + Wᵀ)/2 and of its antisymmetric part
W_a = (W − Wᵀ)/2:

    Jacobian     ∂f/∂z = (1/τ) [ −I + G diag(φ'(h)) M ]
    divergence   ∇·f   = (1/τ) [ −d + Σ_j φ'(h_j) (M G)_jj ]          O(N d) per point

For low-rank models P W_a = ½ (A − (P Aᵀ) Mᵀ) costs O(N d²): no N×N matrix is formed.
"""
import numpy as np

from ..blocks import row_blocks
from ..errors import DDMError


def dphi(h):
    """φ'(h) = 1 − tanh²(h)."""
    t = np.tanh(h)
    return 1.0 - t * t


class LatentField:
    """The latent drift, Jacobian and divergence of a network, or of one part of its W.

    ``part`` is "W" (the network), "W_s" (symmetric part only) or "W_a" (antisymmetric part
    only). By default the leak −z/τ, the bias and the input belong to "W" and "W_s" only, so that
    the drifts of the two parts add up to the network's: f = f_s + f_a with f_a = (1/τ) P W_a φ.
    ``affine=True`` keeps them for "W_a" too: the latent drift of a network whose connectivity is
    W_a alone (what the antisymmetric-only network does on the manifold).
    """

    def __init__(self, net, part="W", affine=None):
        if part not in ("W", "W_s", "W_a"):
            raise DDMError(f"unknown part {part!r}: use 'W', 'W_s' or 'W_a'")
        self.net, self.part = net, part
        P, M = net.P, net.M
        if net.mode == "lowrank":
            G_W = net.A
            G_T = (P @ net.A.T) @ M.T       # P Wᵀ = P Aᵀ Mᵀ, O(N d²)
        else:
            G_W = P @ net.W
            G_T = P @ net.W.T
        G = {"W": G_W, "W_s": 0.5 * (G_W + G_T), "W_a": 0.5 * (G_W - G_T)}[part]
        self.G = np.ascontiguousarray(G)
        self.diag_MG = np.einsum("jk,kj->j", M, self.G)   # (M G)_jj
        self.affine = part != "W_a" if affine is None else bool(affine)
        self.tau, self.d = net.tau, net.d

    def _points(self, z):
        z = np.asarray(z, dtype=float)
        if z.ndim != 2 or z.shape[1] != self.d:
            raise DDMError(f"latent points must have shape (K, {self.d}), got {z.shape}")
        return z

    def _blocks(self, z):
        """(rows, z rows, h = M z + c) over row blocks: the K×N pre-activations are never held
        whole (blocks.py; analysis evaluates these on millions of samples)."""
        for sl in row_blocks(len(z), self.net.N):
            yield sl, z[sl], z[sl] @ self.net.M.T + self.net.c

    def drift(self, z, u=None):
        z = self._points(z)
        f = np.empty_like(z)
        for sl, zs, h in self._blocks(z):
            f[sl] = np.tanh(h) @ self.G.T
        if self.affine:
            f = f - z + self.net.b_z
            if u is not None and self.net.p:
                f = f + np.asarray(u, dtype=float) @ self.net.B_z.T
        return f / self.tau

    def jacobian(self, z):
        z = self._points(z)
        J = np.empty((len(z), self.d, self.d))
        for sl, _, h in self._blocks(z):
            J[sl] = np.einsum("aj,kj,jb->kab", self.G, dphi(h), self.net.M)
        if self.affine:
            J = J - np.eye(self.d)[None]
        return J / self.tau

    def divergence(self, z):
        z = self._points(z)
        div = np.empty(len(z))
        for sl, _, h in self._blocks(z):
            div[sl] = dphi(h) @ self.diag_MG
        if self.affine:
            div = div - self.d
        return div / self.tau


def constant_diffusion(net):
    """The network's latent D = S0 S0ᵀ + σ_p² P Pᵀ when it does not depend on z (R = 0), else None."""
    if np.any(net.R != 0):
        return None
    return net.S0 @ net.S0.T + net.sigma_private ** 2 * (net.P @ net.P.T)


def asymmetry_lowrank(M, A):
    """a = ‖W_a‖_F/‖W‖_F and η = tr(W²)/‖W‖_F² for W = M A from d×d products (§5.1), O(N d²).

    ‖W‖² = tr((MᵀM)(A Aᵀ)),  tr(W²) = tr((A M)²),  ‖W_s‖² = (‖W‖² + tr W²)/2,
    ‖W_a‖² = (‖W‖² − tr W²)/2.
    """
    norm2 = float(np.trace((M.T @ M) @ (A @ A.T)))
    AM = A @ M
    trW2 = float(np.trace(AM @ AM))
    if norm2 <= 0:
        raise DDMError("the connectivity is zero: its asymmetry is undefined")
    return {"a": float(np.sqrt(max(norm2 - trW2, 0.0) / 2 / norm2)), "eta": trW2 / norm2,
            "norm_W": float(np.sqrt(norm2)),
            "norm_W_s": float(np.sqrt(max(norm2 + trW2, 0.0) / 2)),
            "norm_W_a": float(np.sqrt(max(norm2 - trW2, 0.0) / 2))}


def decoder_alignment(net, D):
    """How close each decoder a_i is to D m_i (docs/irreversibility.md §5.4).

    The latent dynamics is exactly reversible (for generic φ') iff every rank-one term D⁻¹ a_i m_iᵀ
    of the Jacobian is symmetric, i.e. a_i ∥ D m_i. We measure it in the metric of D, where the
    condition reads D^{-1/2} a_i ∥ D^{1/2} m_i:

        cos_i = <D^{-1/2} a_i, D^{1/2} m_i> / (|D^{-1/2} a_i| |D^{1/2} m_i|)   (= aᵢ·mᵢ / ...)

    Summary: the weighted mean of |cos_i| with weights w_i = |D^{-1/2} a_i| |D^{1/2} m_i| (the size
    of neuron i's contribution), 1 for an exactly reversible network. For full models a_i is the
    i-th column of G = P W (what neuron i's rate contributes to the latent drift).
    """
    D = np.asarray(D, dtype=float)
    L = np.linalg.cholesky(D)                   # D = L Lᵀ
    a = LatentField(net).G                      # (d, N): decoder columns
    u = np.linalg.solve(L, a)                   # L⁻¹ a_i: same Gram matrix as D^{-1/2} a_i
    v = L.T @ net.M.T                           # Lᵀ m_i: |Lᵀ m|² = mᵀ D m
    nu, nv = np.linalg.norm(u, axis=0), np.linalg.norm(v, axis=0)
    w = nu * nv
    # <L⁻¹ a, Lᵀ m> = aᵀ L⁻ᵀ Lᵀ m = a·m, the same for any square root of D
    cos = np.einsum("dn,dn->n", a, net.M.T) / np.where(w > 0, w, 1.0)
    weighted = float(np.sum(w * np.abs(cos)) / np.sum(w)) if np.sum(w) > 0 else float("nan")
    return {"cos": cos, "weights": w, "weighted_abs_cos": weighted,
            "misalignment": float(np.sqrt(np.sum(w ** 2 * np.clip(1 - cos ** 2, 0, None))
                                          / np.sum(w ** 2)))}


def spectra(net, max_full=2048):
    """Eigenvalues of W (N×N, when N ≤ max_full) and of the latent connectivity, singular values.

    The latent connectivity is G M = P W M (d×d; A M for low-rank models, whose nonzero
    eigenvalues are exactly those of W = M A).
    """
    G = LatentField(net).G
    latent = np.linalg.eigvals(G @ net.M)
    out = {"latent_connectivity": G @ net.M, "eig_latent": latent}
    if net.mode == "lowrank":
        # singular values of M A: those of R_M A with M = Q_M R_M (thin QR), O(N d²)
        R_M = np.linalg.qr(net.M, mode="r")
        _, R_A = np.linalg.qr(net.A.T, mode="reduced")
        sv = np.linalg.svd(R_M @ R_A.T, compute_uv=False)
        # the other N − d eigenvalues of M A are exactly 0
        out["eig_W"] = latent
    else:
        sv = np.linalg.svd(net.W, compute_uv=False)
        out["eig_W"] = np.linalg.eigvals(net.W) if net.N <= max_full else latent
    out["singular_values"] = sv
    out["rank"] = int(np.sum(sv > sv[0] * 1e-10)) if sv.size and sv[0] > 0 else 0
    return out


def epr_split_ensemble(net, z, D):
    """e_p = e_p,s + e_p,a along W = W_s + W_a from stationary samples
    (docs/irreversibility.md §5.3).

    Φ_k = E[f_irrᵀ (D/2)⁻¹ f_k]. With f_irr = f − f_rev, f_rev = ½ D ∇log p_s (constant D) and
    E[∇log p_s · f_k] = −E[∇·f_k] (integration by parts), this needs no density:

        Φ_k = E_ps[ 2 fᵀ D⁻¹ f_k + ∇·f_k ],       k = s, a;   Φ_s + Φ_a = Φ = E[2 fᵀD⁻¹f + ∇·f]

    z: stationary latent samples (trials, T, d) or (K, d). Returns the three values and standard
    errors from per-trial means (independent trials) when z is 3-D.
    """
    z = np.asarray(z, dtype=float)
    shape = z.shape[:-1]
    flat = z.reshape(-1, net.d)
    Dinv = np.linalg.inv(np.asarray(D, dtype=float))
    fields = {name: LatentField(net, part) for name, part in
              (("total", "W"), ("symmetric", "W_s"), ("antisymmetric", "W_a"))}
    sums = {name: np.zeros(len(flat)) for name in fields}
    # row blocks keep the K×N rates in pieces (blocks.py); φ(h) is computed once for all parts
    for sl in row_blocks(len(flat), net.N):
        zc = flat[sl]
        t = np.tanh(zc @ net.M.T + net.c)
        dp = 1.0 - t * t
        drifts, divs = {}, {}
        for name, fk in fields.items():
            drifts[name] = t @ fk.G.T
            divs[name] = dp @ fk.diag_MG
            if fk.affine:
                drifts[name] += net.b_z - zc
                divs[name] -= net.d
        Df = drifts["total"] @ Dinv / net.tau
        for name in fields:
            sums[name][sl] = (2 * np.einsum("ka,ka->k", Df, drifts[name]) + divs[name]) / net.tau
    out = {}
    for name in fields:
        terms = sums[name].reshape(shape)
        if terms.ndim == 2 and terms.shape[0] > 1:
            means = terms.mean(axis=1)
            out[name] = (float(means.mean()), float(means.std(ddof=1) / np.sqrt(len(means))))
        else:
            terms = terms.ravel()
            out[name] = (float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(terms.size)))
    return out
