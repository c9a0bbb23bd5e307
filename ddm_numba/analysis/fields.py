"""The latent-SDE view of a target and of a network: the two "sides" and the fields of W, W_s, W_a.

A side is one latent SDE dz = f(z) dt + g(z) dW (u = 0) as the analysis sees it: its drift,
Jacobian, divergence and diffusion D = g gᵀ, with D as a matrix when it is constant. The target's side comes
from its System (Jacobian by central differences), the network's from LatentField on the manifold
x = M z + c, for W or for one of its parts W_s = (W + Wᵀ)/2, W_a = (W − Wᵀ)/2.

`ddm analyze` (report) computes with these and hands them, with the decoder alignment, to the
figures (plotting), which draw what they are given.
"""
import numpy as np

from .connectivity import LatentField, constant_diffusion, decoder_alignment


class Side:
    """Drift, Jacobian, divergence and diffusion of one latent SDE (target or network), u = 0."""

    def __init__(self, label, drift, jacobian, divergence, diffusion, D_const):
        self.label = label
        self.drift, self.jacobian, self.divergence = drift, jacobian, divergence
        self.diffusion = diffusion      # z (K, d) -> D (K, d, d)
        self.D = D_const                # (d, d) when constant, else None


def _numeric_jacobian(f, d, scale):
    """Central differences of a vectorized drift: J[k, a, b] = ∂f_a/∂z_b (step 1e-6 · scale)."""
    def jac(z):
        z = np.asarray(z, dtype=float)
        cols = []
        for b in range(d):
            e = np.zeros(d)
            e[b] = 1e-6 * scale[b]
            cols.append((f(z + e) - f(z - e)) / (2 * e[b]))
        return np.stack(cols, axis=2)
    return jac


def target_side(system):
    d = system.d
    scale = np.maximum(np.ptp(system.domain, axis=1), 1e-3)

    def drift(z):
        return np.asarray(system.drift(np.asarray(z, dtype=float), None), dtype=float)

    def diffusion(z):
        g = np.asarray(system.diffusion(np.asarray(z, dtype=float)), dtype=float)
        return np.einsum("kam,kbm->kab", g, g)

    jac = _numeric_jacobian(drift, d, scale)
    D = diffusion(system.domain.mean(axis=1)[None])[0] if system.constant_diffusion else None
    return Side("target", drift, jac, lambda z: np.trace(jac(z), axis1=1, axis2=2),
                diffusion, D)


def network_side(net, part="W", label="network", affine=None):
    field = LatentField(net, part, affine)
    return Side(label, field.drift, field.jacobian, field.divergence, net.latent_diffusion,
                constant_diffusion(net))


def part_sides(net):
    """The network and the latent drifts of its parts: W, W_s alone, W_a alone (with the leak,
    bias and input: what the antisymmetric-only network does on the manifold)."""
    return [network_side(net, "W", "network"), network_side(net, "W_s", "symmetric"),
            network_side(net, "W_a", "antisymmetric", affine=True)]


def split_W(W):
    """W = W_s + W_a: the symmetric part (W + Wᵀ)/2 and the antisymmetric part (W − Wᵀ)/2."""
    return 0.5 * (W + W.T), 0.5 * (W - W.T)


def positive_definite(D):
    w = np.linalg.eigvalsh(0.5 * (D + D.T))
    return bool(w.min() > 1e-12 * max(abs(w).max(), 1e-300))


def decoder_alignment_or_none(net, D, norm_W):
    """connectivity.decoder_alignment(net, D) where it is defined (a constant, positive definite
    D and W ≠ 0), else None."""
    if D is not None and norm_W > 0 and positive_definite(D):
        return decoder_alignment(net, D)
    return None
