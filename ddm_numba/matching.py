"""Drift-diffusion matching (docs/model.md §4–5): losses on a flat parameter vector, and training.

Objectives follow scipy.optimize's convention: a pure function of one flat float64 vector that
returns (loss, gradient), so each can be tested without the optimizer.
"""
import math
import sys
import time
import warnings

import numpy as np
import scipy.optimize

from . import selfcheck
from ._version import __version__
from .backends import DEFAULT_DEVICE, cpu, select
from .errors import DDMError, checked_number as _number
from .checkpoint import Checkpointer, check_resume, load_checkpoint
from .network import Network
from .resources import require
from .measure import check_fraction, pick, visit
from .systems import evaluate, get_system
from .masks import make_mask
from .threads import BLAS_THREADS, one_blas_thread
from .admm import solve_box_qp
from .training import (Packer, _minimize, diffusion_loss_grad,  # noqa: F401 (old names)
                       lowrank_scale, ridge_solve)


class FitWarning(UserWarning):
    """A fit that finished but should not be trusted as it is (the message says why)."""


class DriftData:
    """Samples of the target's drift: z (K, d), u (K, p), f (K, d), weights Λ (d,), τ, and the
    backend (backends.cpu or backends.cuda) that every loss and Gram pass on them runs on."""

    def __init__(self, z, u, f, lam, tau, backend=cpu):
        self.z = np.ascontiguousarray(z, dtype=float)
        self.u = np.ascontiguousarray(u, dtype=float).reshape(len(self.z), -1)
        self.f = np.ascontiguousarray(f, dtype=float)
        self.lam = np.ascontiguousarray(lam, dtype=float)
        self.tau = float(tau)
        self.K, self.d = self.z.shape
        self.p = self.u.shape[1]
        self.backend = backend
        self._samples = None

    @property
    def samples(self):
        """The samples as the backend's loss reads them (on the GPU for CUDA: uploaded once)."""
        if self._samples is None:
            self._samples = self.backend.drift_samples(self.z, self.u, self.f, self.lam)
        return self._samples

    def gram_statistics(self, Y, M, c):
        """backend.gram_statistics on these samples' z, u with targets Y for the embedding M, c."""
        return self.backend.gram_statistics(self.z, self.u, np.ascontiguousarray(Y),
                                            np.ascontiguousarray(M.T), np.ascontiguousarray(c))


# -- low-rank drift -------------------------------------------------------------------------------

def lowrank_packer(N, d, p, train_embedding=True):
    shapes = {"A": (d, N), "b_z": (d,)}
    if p:
        shapes["B_z"] = (d, p)
    if train_embedding:
        shapes["M"] = (N, d)
        shapes["c"] = (N,)
    return Packer(shapes)


def lowrank_loss_grad(theta, packer, data, reg_A, fixed=None):
    """L_f of docs/model.md §4 for W = M A, plus λ_A ‖A‖²_F, and its gradient (flat vectors).

    ``fixed`` supplies M and c when the embedding is not trained. The loss runs on
    ``data.backend`` (on CUDA the samples stay on the GPU: only parameters and gradient move).
    """
    prm = dict(fixed or {})
    prm.update(packer.unpack(theta))
    N, d = prm["M"].shape
    B_z = prm.get("B_z", np.zeros((d, data.p)))
    loss, gA, gbz, gBz, gMT, gc = data.backend.lowrank_drift_loss_grad(
        data.samples, np.ascontiguousarray(prm["A"]),
        np.ascontiguousarray(prm["b_z"]), np.ascontiguousarray(B_z),
        np.ascontiguousarray(prm["M"].T), np.ascontiguousarray(prm["c"]), data.tau)
    loss += reg_A * float(np.sum(prm["A"] ** 2))
    grads = {"A": gA + 2.0 * reg_A * prm["A"], "b_z": gbz, "B_z": gBz, "M": gMT.T, "c": gc}
    return loss, packer.pack(grads)


def ridge_decoders(data, M, c, reg_A):
    """Closed-form A, b_z, B_z for fixed M, c (docs/model.md §5 step 2).

    τ f_net = Θ ψ − z with Θ = [A, b_z, B_z], ψ = [φ(Mz + c); 1; u]. Output a decouples:
        min_Θa  Λ_a/τ² · (1/K) Σ_k (Θ_a ψ_k − y_ka)² + λ_A ‖A_a‖²,   y_k = τ f_k + z_k
        ⇒ (G + (τ² λ_A / Λ_a) I_A) Θ_aᵀ = C_a,   G = (1/K) Σ ψψᵀ, C = (1/K) Σ ψ yᵀ.
    """
    N, d = M.shape
    Y = np.ascontiguousarray(data.tau * data.f + data.z)
    G, C, _ = data.gram_statistics(Y, M, c)
    ridge = np.zeros(G.shape[0])
    ridge[:N] = 1.0
    # training.RIDGE_FLOOR keeps the solve well posed when λ_A = 0 (collinear tanh features)
    penalty = np.array([ridge * data.tau ** 2 * reg_A / data.lam[a] for a in range(d)])
    theta = ridge_solve(G, C, penalty).T
    return theta[:, :N], theta[:, N], theta[:, N + 1:]


# -- full drift (fixed embedding): the Gram form ------------------------------------------------

STABILITY_ROUNDS = 8     # fits of the full W: the first, then up to 7 on ever wider tubes
TUBE_START = 0.003       # the first tube's width (std of h off the manifold; h = M z + c is O(1))
TUBE_ERROR_FACTOR = 3.0  # a tube may raise the drift error on the training states this much,
TUBE_ERROR_FLOOR = 0.1   # or up to this relative error where that is more; no further
ADMM_ITERATIONS = 10     # ADMM iterations per L-BFGS-B iteration of max_iter (each costs less)
TUBE_REFINE = 3          # bisections of the tube's width after the first stable round
STABILITY_STATES = 8     # held-out states at which the transverse stability is checked


def transverse_growth(W, M, c, z):
    """The largest growth rate (units of 1/τ) of a perturbation off the manifold, over states z.

    At x = M z + c the network's Jacobian is J = −I + W diag(φ'(x)) (times 1/τ). Let U be an
    orthonormal basis of the directions that P does not see (null P = range(M)⊥, from a complete
    QR of M); a perturbation x + U w with w small moves as ẇ = Uᵀ J U w, since Uᵀ M = 0. The
    manifold attracts there when every eigenvalue of B = Uᵀ J U has a negative real part;
    returns max Re λ(B) over the states (O(N³) each). A low-rank W = M A gives B = −I: −1."""
    N, d = M.shape
    U = np.linalg.qr(M, mode="complete")[0][:, d:]
    WU = W.T @ U                    # columns: Wᵀ u, so Uᵀ W D U = (WU)ᵀ D U
    worst = -np.inf
    for zk in np.atleast_2d(z):
        slope = 1.0 - np.tanh(M @ zk + c) ** 2
        B = -np.eye(N - d) + WU.T @ (slope[:, None] * U)
        worst = max(worst, float(np.max(np.linalg.eigvals(B).real)))
    return worst

class FullGram:
    """The full-mode drift loss as a quadratic form in Θ = [W, b, B_in] (docs/model.md §3b, §4d).

    With ψ_k = [φ(h_k); 1; u_k], h_k = M z_k + c fixed, τ F_k = Θ ψ_k − h_k, P h_k = z_k + P c and
    Q h_k = Q c:
        τ (P F_k − f_k) = P Θ ψ_k − y_k,   y_k = z_k + P c + τ f_k
        τ Q F_k         = Q Θ ψ_k − Q c
    so, with G = (1/K)Σψψᵀ, C = (1/K)Σψyᵀ, ψ̄ = (1/K)Σψ, s = (1/K)Σ yᵀΛy, X = Θ G:
        τ² L = tr(Λ P X Θᵀ Pᵀ) − 2 tr(Λ P Θ C) + s + λ⊥ [tr(Q X Θᵀ) − 2 (Qc)ᵀ Θ ψ̄ + cᵀQc]
        τ² ∂L/∂Θ = 2 Pᵀ Λ P X − 2 Pᵀ Λ Cᵀ + 2 λ⊥ (Q X − Q c ψ̄ᵀ)
    plus λ_W ‖W‖²_F. Every evaluation is O(N³), whatever K: the one product X = Θ G (2 N n²
    flops, BLAS). Q = I − M P is never applied as an N×N matrix: Q Y = Y − M (P Y) costs O(N n d),
    which halves the cost against forming Q X and Q Θ densely.
    """

    def __init__(self, data, M, c, P, lam_perp, reg_W, mask=None):
        self.N, self.d = M.shape
        # masks.py: W is kept at zero outside the mask, so the loss is a function of the allowed
        # entries only and its gradient is ∂L/∂W_ij on them, 0 elsewhere
        self.mask = None if mask is None else np.asarray(mask, dtype=float)
        self.p = data.p
        self.tau, self.lam, self.lam_perp, self.reg_W = data.tau, data.lam, lam_perp, reg_W
        self.P = P  # P = (MᵀM)⁻¹Mᵀ; Q = I − M P is applied through _Q, never stored
        y = data.z + P @ c + data.tau * data.f
        self.G, self.C, self.mean = data.gram_statistics(y, M, c)
        self.s = float(np.mean(np.sum(data.lam * y * y, axis=1)))
        self.M, self.c = M, c
        self.Qc = self._Q(c)
        self.cQc = float(c @ self.Qc)
        self.packer = Packer({"W": (self.N, self.N), "b": (self.N,), "B_in": (self.N, self.p)})
        self.G_manifold, self.tube, self._H, self._z = self.G, 0.0, None, data.z
        # the Λ-weighted spread of the target drift, the scale of drift_error
        self.f_spread = float(np.mean(np.sum(data.lam * (data.f - data.f.mean(0)) ** 2, 1)))

    def drift_error(self, flat):
        """The relative drift error on the training states, sqrt(mean Σ_a λ_a (f_net − f)_a² /
        mean Σ_a λ_a (f − f̄)_a²): the P part of the loss (τ (f_net − f) = P Θ ψ − y) on the
        manifold, without the tube, the off-manifold term or the ridge."""
        on = self._parts(self.unflat(flat), self.G_manifold)[0] / self.tau ** 2
        return math.sqrt(max(on, 0.0) / max(self.f_spread, 1e-300))

    def set_tube(self, sigma):
        """Train on a tube around the manifold: states x = h_k + q, q ~ N(0, σ² Q), with the
        same targets (on-manifold drift f(z_k), off-manifold relaxation −Q(x − c)/τ at the leak's
        rate). To first order in q, ψ(x) = ψ_k + [φ'(h_k) ∘ q; 0; 0]; q has mean 0, so C and ψ̄
        keep their values and the expected loss is the loss with
            G → G + σ² blockdiag(H, 0),   H = (1/K) Σ_k D_k Q D_k = Q ∘ S,
            S = (1/K) Σ_k φ'(h_k) φ'(h_k)ᵀ,   D_k = diag φ'(h_k)
        (Q is the orthogonal projector off the manifold, Q² = Q = Qᵀ). The added term is
        σ² tr(A W H Wᵀ)/τ²: the on- and off-manifold drift's response to a displacement off
        the manifold, averaged over the states. Its off-manifold part σ² λ⊥ ‖Q W D_k Q‖² is
        the transverse Jacobian (transverse_growth), so a larger σ pulls the growth rate
        towards the leak's −1/τ, at the price of the on-manifold fit. The Gram matrix keeps its
        form, so both solvers take it as it is; σ = 0 is the plain fit."""
        if sigma > 0 and self._H is None:
            N, S = self.N, np.zeros((self.N, self.N))
            for s in range(0, len(self._z), 4096):     # O(K N²), 4096 states at a time
                slope = 1.0 - np.tanh(self._z[s:s + 4096] @ self.M.T + self.c) ** 2
                S += slope.T @ slope
            S /= len(self._z)
            self._H = self._Q(np.eye(N)) * S        # Q ∘ S
        self.tube = float(sigma)
        self.G = self.G_manifold.copy() if sigma > 0 else self.G_manifold
        if sigma > 0:
            self.G[: self.N, : self.N] += self.tube ** 2 * self._H

    def quadratic(self):
        """(A, B, e) of the loss as admm.solve_box_qp's q(Θ): τ² L = q(Θ) + s + λ⊥ cᵀQc with
            A = PᵀΛP + λ⊥ Q,   B = PᵀΛCᵀ + λ⊥ (Qc) ψ̄ᵀ,   e = λ_W τ² on W's columns, 0 after
        (the class docstring's τ² L, Θ G Θᵀ gathered: tr(ΛPXΘᵀPᵀ) = tr(PᵀΛP Θ G Θᵀ))."""
        LP = self.lam[:, None] * self.P
        A = self.P.T @ LP + self.lam_perp * self._Q(np.eye(self.N))
        B = LP.T @ self.C.T + self.lam_perp * np.outer(self.Qc, self.mean)
        e = np.zeros(self.G.shape[0])
        e[: self.N] = self.reg_W * self.tau ** 2
        return 0.5 * (A + A.T), B, e

    def manifold_loss(self, flat):
        """The loss on the manifold alone (no tube), at the flat parameters."""
        prm = self.packer.unpack(flat)
        on, off, _, _ = self._parts(self.theta(prm), self.G_manifold)
        return (on + off) / self.tau ** 2 + self.reg_W * float(np.sum(prm["W"] ** 2))

    def unflat(self, flat):
        return self.theta(self.packer.unpack(flat))

    def flat(self, Th):
        N = self.N
        return self.packer.pack({"W": Th[:, :N], "b": Th[:, N], "B_in": Th[:, N + 1:]})

    def solve(self, x0, lo, hi, max_iter, tol, progress, stage="full W", checkpoint=None,
              snapshot=None):
        """The loss's minimum over the box lo ≤ x ≤ hi (flat vectors, ±inf allowed) by ADMM
        (admm.py), from x0. Returns (x, info) like training._minimize."""
        A, B, e = self.quadratic()
        best = [math.inf]

        def record(Th, iteration):
            """The loss at Th; the best so far goes to the checkpoint (each Z is feasible)."""
            value = self.loss_grad(self.flat(Th))[0]
            if checkpoint is not None and value < best[0]:
                best[0] = value
                checkpoint.save(stage, snapshot(self.flat(Th)), value, iteration)
            return value

        Z, info = solve_box_qp(A, self.G, B, e, self.unflat(lo), self.unflat(hi),
                               self.unflat(x0), max_iter=max_iter, tol=tol, stage=stage,
                               progress=progress, record=None if checkpoint is None and
                               progress is None else record)
        x = self.flat(Z)
        info["loss"] = self.loss_grad(x)[0]
        if progress is not None:
            print(f"  [{stage}] done: {info['iterations']} ADMM iterations, loss "
                  f"{info['loss']:.4e}, {info['seconds']:.1f}s ({info['message']})",
                  file=progress, flush=True)
        return x, info

    def masked_start(self, mask):
        """A start for a masked fit: each neuron's allowed inputs fitted to its target current.

        The loss above is zero when Θ ψ_k = t_k := h_k + τ M f_k for every state (on-manifold
        velocity M f, no off-manifold drive: P t = y, Q t = Q c). Its Euclidean stand-in
        (1/K) Σ_k |Θ ψ_k − t_k|² + λ_W ‖W‖² (τ²/λ̄ scaling) separates by rows: row i is a ridge
        regression of t_i on the features it may use, φ_j for j in the mask's row i plus the
        constant and the inputs, with the Gram block G[S_i, S_i]. Cost Σ_i |S_i|³, which follows
        the number of allowed connections. Returns (W, b, B_in), W zero outside the mask.
        (1/K) Σ ψ tᵀ = (C − ψ̄ (P c)ᵀ) Mᵀ + ψ̄ cᵀ, from the statistics already held.
        """
        N, p = self.N, self.p
        Ct = (self.C - np.outer(self.mean, self.P @ self.c)) @ self.M.T + np.outer(self.mean,
                                                                                   self.c)
        lam_bar = float(np.mean(self.lam))
        penalty = np.zeros(N + 1 + p)
        penalty[:N] = self.reg_W * self.tau ** 2 / lam_bar
        Th = np.zeros((N, N + 1 + p))
        tail = np.arange(N, N + 1 + p)
        for i in range(N):
            S = np.concatenate([np.flatnonzero(mask[i]), tail])
            Th[i, S] = ridge_solve(self.G[np.ix_(S, S)], Ct[S, i], penalty[S])
        return Th[:, :N], Th[:, N], Th[:, N + 1:]

    def _Q(self, Y):
        """Q Y = Y − M (P Y): the off-manifold projector without an N×N product."""
        return Y - self.M @ (self.P @ Y)

    def theta(self, prm):
        return np.hstack([prm["W"], prm["b"][:, None], prm["B_in"]])

    def _parts(self, Th, G):
        """τ² times the loss's on-manifold (P) and off-manifold (Q) parts at Θ with the Gram
        matrix G (the class docstring's formula), and the X = Θ G and Λ P they used."""
        X = Th @ G
        LP = self.lam[:, None] * self.P
        on = np.sum((LP @ X) * (self.P @ Th)) - 2.0 * np.sum((LP @ Th) * self.C.T) + self.s
        off = self.lam_perp * (np.sum(X * self._Q(Th)) - 2.0 * self.Qc @ Th @ self.mean
                               + self.cQc)
        return float(on), float(off), X, LP

    def loss_grad(self, flat):
        prm = self.packer.unpack(flat)
        Th = self.theta(prm)
        on, off, X, LP = self._parts(Th, self.G)
        loss = on + off
        grad = 2.0 * (self.P.T @ (LP @ X) - LP.T @ self.C.T
                      + self.lam_perp * (self._Q(X) - np.outer(self.Qc, self.mean)))
        loss /= self.tau ** 2
        grad /= self.tau ** 2
        W = prm["W"]
        loss += self.reg_W * float(np.sum(W * W))
        grad[:, : self.N] += 2.0 * self.reg_W * W
        if self.mask is not None:
            grad[:, : self.N] *= self.mask
        N = self.N
        return float(loss), self.packer.pack({"W": grad[:, :N], "b": grad[:, N],
                                              "B_in": grad[:, N + 1:]})


# -- diffusion --------------------------------------------------------------------------------------

# -- training ---------------------------------------------------------------------------------------

def initial_embedding(domain, N, rng, gain=(0.5, 3.0)):
    """Random encoders M and offsets c so that h = M z + c spans tanh's nonlinear range.

    In box coordinates z̃ = (z − centre) / halfwidth ∈ [−1, 1]^d, neuron i gets a random unit
    direction e_i, a gain g_i ~ U(gain) and a threshold ξ_i ~ U(−1, 1):
        h_i = g_i (e_i · z̃ − ξ_i)  ⇒  M_i = g_i e_i / halfwidth,  c_i = −g_i (e_i · centre/halfwidth + ξ_i).
    Each neuron's tanh turns inside the box, at a random place and orientation.
    """
    d = domain.shape[0]
    centre = domain.mean(axis=1)
    half = (domain[:, 1] - domain[:, 0]) / 2.0
    e = rng.standard_normal((N, d))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    g = rng.uniform(gain[0], gain[1], size=N)
    xi = rng.uniform(-1.0, 1.0, size=N)
    M = g[:, None] * e / half
    c = -g * (e @ (centre / half) + xi)
    return M, c


def sample_domain(system, K, rng):
    """K points uniform over the system's box, and inputs uniform over its input box."""
    lo, hi = system.domain[:, 0], system.domain[:, 1]
    z = lo + (hi - lo) * rng.random((K, system.d))
    if system.p:
        ubox = np.asarray(getattr(system, "input_domain", [[-1.0, 1.0]] * system.p), dtype=float)
        u = ubox[:, 0] + (ubox[:, 1] - ubox[:, 0]) * rng.random((K, system.p))
    else:
        u = np.zeros((K, 0))
    return z, u


def relative_error(pred, true):
    """sqrt( Σ ‖pred − true‖² / Σ ‖true − mean(true)‖² ) over samples (docs/model.md §4f).

    For a constant target (zero spread) the denominator is Σ ‖true‖² instead.
    """
    pred = pred.reshape(len(pred), -1)
    true = true.reshape(len(true), -1)
    num = float(np.sum((pred - true) ** 2))
    den = float(np.sum((true - true.mean(axis=0)) ** 2))
    if den <= 1e-12 * float(np.sum(true ** 2)):
        den = float(np.sum(true ** 2))
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


TAU_RANGE = (1e-6, 1e6)


def _tau(tau):
    """τ in the system's time units; far outside [1e-6, 1e6] the penalties (∝ 1/τ²) and the
    decoders (∝ τ f) under- or overflow."""
    tau = _number(tau, "tau", 0, low_open=True)
    if not TAU_RANGE[0] <= tau <= TAU_RANGE[1]:
        raise DDMError(f"tau = {tau:g} is outside [{TAU_RANGE[0]:g}, {TAU_RANGE[1]:g}] (in the "
                       "system's time units); rescale time in the system instead")
    return tau


def dale_lowrank_bounds(packer, sign):
    """Box bounds on the joint low-rank vector that make W = M A obey Dale's law exactly.

    Neuron j is excitatory (sign_j = +1) or inhibitory (−1): every weight it sends, W_ij, must
    have its sign. With W_ij = Σ_a M_ia A_aj, the constraints
        M_ia ≥ 0  (every neuron's encoder in the positive orthant of the latent space),
        sign_j A_aj ≥ 0  (each decoder column has its neuron's sign)
    give sign_j W_ij = Σ_a M_ia (sign_j A_aj) ≥ 0, a sum of products of non-negative numbers:
    Dale's law for every entry of the N×N W while only N d + d N numbers are trained. They are
    bounds on single variables, so L-BFGS-B keeps every iterate feasible; the loss and its
    gradient are those of the unconstrained low-rank fit (lowrank_loss_grad, FD-checked).
    What the encoders give up: tuning directions e_i only in the positive orthant. That still
    spans the functions the drift needs: ridge functions φ(m·z + c) with directions in any open
    cone are dense, and with both signs of decoders f is a difference of such sums."""
    d, N = packer.shapes["A"]
    inf = np.inf
    lo = {"A": np.where(sign[None, :] > 0, 0.0, -inf).repeat(d, 0),
          "b_z": np.full(d, -inf), "M": np.zeros((N, d)), "c": np.full(N, -inf)}
    hi = {"A": np.where(sign[None, :] > 0, inf, 0.0).repeat(d, 0),
          "b_z": np.full(d, inf), "M": np.full((N, d), inf), "c": np.full(N, inf)}
    if "B_z" in packer.shapes:
        lo["B_z"] = np.full(packer.shapes["B_z"], -inf)
        hi["B_z"] = np.full(packer.shapes["B_z"], inf)
    return packer.pack(lo), packer.pack(hi)


def _joint_drift(data, params, reg_joint, max_iter, tol, progress, ckpt, stage="drift",
                 sign=None):
    """Joint L-BFGS-B over decoders and embedding (low-rank), from params = (A, b_z, B_z, M, c);
    ``sign`` (N,): Dale's law at low rank (dale_lowrank_bounds), from a feasible start."""
    A, b_z, B_z, M, c = params
    d, N = A.shape
    p = data.p
    packer = lowrank_packer(N, d, p, train_embedding=True)
    scale = lowrank_scale(packer, A, M, B_z)   # L-BFGS-B is not scale invariant
    bounds = None
    if sign is not None:
        lo, hi = dale_lowrank_bounds(packer, sign)
        bounds = scipy.optimize.Bounds(lo / scale, hi / scale)   # scale > 0: signs unchanged

    def objective(x):
        loss, grad = lowrank_loss_grad(x * scale, packer, data, reg_joint)
        return loss, grad * scale

    def snapshot(x):
        arrays = packer.unpack(x * scale)
        arrays.setdefault("B_z", np.zeros((d, p)))
        return arrays

    x0 = packer.pack({"A": A, "b_z": b_z, "B_z": B_z, "M": M, "c": c}) / scale
    x, info = _minimize(objective, x0, stage, max_iter, tol, progress, bounds=bounds,
                        snapshot=snapshot, checkpoint=ckpt)
    prm = packer.unpack(x * scale)
    return (prm["A"], prm["b_z"], prm.get("B_z", B_z), prm["M"], prm["c"]), info


def varpro_loss_grad(x, packer, data, reg_A):
    """L*(M, c) = min_Θ L(Θ, M, c) and its gradient in (M, c) (flat, packer's order); see
    _varpro_drift for the derivation."""
    prm = packer.unpack(x)
    N, d = prm["M"].shape
    full = lowrank_packer(N, d, data.p, train_embedding=True)
    A, b_z, B_z = ridge_decoders(data, prm["M"], prm["c"], reg_A)
    theta = full.pack({"A": A, "b_z": b_z, "B_z": B_z, "M": prm["M"], "c": prm["c"]})
    loss, grad = lowrank_loss_grad(theta, full, data, reg_A)
    g = full.unpack(grad)
    return loss, packer.pack({"M": g["M"], "c": g["c"]})


def _varpro_drift(data, params, reg_A, max_iter, tol, progress, stage="drift", checkpoint=None):
    """Variable projection: only the embedding (M, c) is optimized; the decoders are eliminated.

    For fixed (M, c) the loss L(Θ, M, c) of lowrank_loss_grad (with penalty λ_A ‖A‖²) is a
    ridge problem in Θ = [A, b_z, B_z], solved exactly by ridge_decoders: Θ*(M, c). Then
        L*(M, c) = L(Θ*(M, c), M, c),
        dL*/d(M, c) = ∂L/∂(M, c) + ∂L/∂Θ · dΘ*/d(M, c) = ∂L/∂(M, c)   (∂L/∂Θ = 0 at Θ*),
    the Golub–Pereyra gradient, exact here because Θ* is the exact minimizer (up to the solve's
    1e-12 floor). So each evaluation is a Gram pass and d solves of size N + 1 + p, then the
    usual loss kernel at (Θ*, M, c) for the M, c gradient. No conditioning penalty is needed:
    the decoders are never iterated on, so λ_A is the user's `reg` itself.
    """
    A, b_z, B_z, M, c = params
    d, N = A.shape
    packer = Packer({"M": (N, d), "c": (N,)})
    full = lowrank_packer(N, d, data.p, train_embedding=True)
    blocks = full.unpack(lowrank_scale(full, A, M, B_z))   # the joint fit's scaling of M and c
    scale = packer.pack({"M": blocks["M"], "c": blocks["c"]})

    def objective(x):
        loss, grad = varpro_loss_grad(x * scale, packer, data, reg_A)
        return loss, grad * scale

    def snapshot(x):
        prm = packer.unpack(x * scale)
        A_, bz_, Bz_ = ridge_decoders(data, prm["M"], prm["c"], reg_A)
        return {"A": A_, "b_z": bz_, "B_z": Bz_, "M": prm["M"], "c": prm["c"]}

    x, info = _minimize(objective, packer.pack({"M": M, "c": c}) / scale, stage, max_iter, tol,
                        progress, snapshot=snapshot, checkpoint=checkpoint)
    prm = packer.unpack(x * scale)
    A, b_z, B_z = ridge_decoders(data, prm["M"], prm["c"], reg_A)
    info["method"] = "varpro"
    return (A, b_z, B_z, prm["M"], prm["c"]), info


VARPRO_MAX_N = 128
"""Up to this N the low-rank drift is trained by variable projection (_varpro_drift), above it by
joint L-BFGS-B (_joint_drift). Measured on lorenz (2 cores, one numba thread, same training
states): at 100 iterations VarPro's held-out e_f is 0.0017 / 0.00043 / 4.1e-5 at N = 24 / 64 /
128 against joint's 0.033 / 0.022 / 0.0067, and joint at 300 iterations still 0.018 / 0.012 /
0.0063, for 1.5–3.6× less time than VarPro's 100. Each VarPro evaluation is a Gram pass,
O(K N²): at N = 256 its 100 iterations took 2.4× joint's 300 (e_f 1.1e-5 against 8.5e-4), too
slow for the default until that pass is faster."""


def default_iterations(N, method="joint"):
    """L-BFGS-B iterations: 100 for VarPro; for joint, 300 from N = 256 up and more for smaller
    networks, so the work N × iterations stays about the same (each evaluation costs ∝ K N)."""
    if method == "varpro":
        return 100
    return int(min(3000, max(300, 76800 // max(int(N), 1))))


def fit_memory(N, d, p, K, mode):
    """Bytes a fit needs at its peak, roughly: Gram statistics and their solves (a few
    (N+1+p)² matrices), the samples, and for full connectivity a dozen N×N matrices."""
    n = N + 1 + p
    total = 8 * (4 * n * n + K * (4 * d + p) + 30 * N * d)
    if mode == "full":
        total += 8 * 12 * n * n
    return total


@one_blas_thread
def fit(system, neurons=256, *, mode="lowrank", seed=0, tau=1.0, samples=None,
        test_samples=4096, max_iter=None, tol=1e-6, reg=1e-10, fixed_embedding=False,
        dale=None, sigma_private=0.0, perp_weight=1.0, progress=sys.stderr, device=DEFAULT_DEVICE,
        checkpoint=None, resume=None, visited=0.7, visit_runs=64, self_check_time=None,
        revisit=1, method="auto", mask=None):
    """Train a network whose latent drift and diffusion match ``system`` (docs/model.md §5).

    Returns the Network; its ``meta["fit"]`` holds the figures of fit on held-out samples.
    ``progress``: a text stream for progress lines (None for silence). ``device``: where the
    drift's loss+gradient and Gram passes run ("cpu", "cuda", "auto": a GPU when one is usable);
    the diffusion stage runs on the CPU.
    ``checkpoint``: a path where the best parameters so far are kept while the optimizer runs
    (every 30 s, and at once on Ctrl-C/SIGTERM, which raise interrupt.Interrupted between
    evaluations); ``resume``: such a checkpoint, to continue from (same system and settings).

    Training measure (measure.py): a fraction ``visited`` of the K training states comes from
    ``visit_runs`` target runs started uniformly in the box (after a burn-in), the rest is
    uniform over the box; Λ and the held-out e_f, e_D are taken on states of separate target runs
    (``meta["fit"]``: e_f, e_D, per-component e_f; the box figures as e_f_box, e_D_box).
    ``method``: how the low-rank drift is trained: "varpro" (only the embedding is optimized, the
    decoders solved exactly inside the objective), "joint" (L-BFGS-B over decoders and embedding
    together), "auto" (VarPro up to VARPRO_MAX_N neurons, joint above).
    ``max_iter``: None follows N (default_iterations); ``tol``: the optimizer stops when the loss
    falls by less than this, relative, per iteration (over 10 iterations).
    ``mask``: full mode only, which W_ij may be non-zero (masks.make_mask: a boolean N×N array,
    a .npz file with key ``mask``, or "random:p=0.1" / "distance:p=0.1", seeded by ``seed``);
    W is exactly zero outside it. Combines with ``dale``.
    ``self_check_time``: time per trial of the self-check (selfcheck.py) that samples network and
    target after the fit and stores its verdict in ``meta["self_check"]`` (None: the default
    length; 0: no check). A verdict other than faithful is also a FitWarning. ``revisit``:
    rounds of refitting (low-rank) with the states the network visits and the target does not,
    while the self-check says not faithful.
    """
    backend, device_reason = select(device)
    device = backend.NAME
    system = get_system(system)
    N = _number(neurons, "neurons", 1, integer=True)
    d, p = system.d, system.p
    if N < d:
        raise DDMError(f"--neurons must be at least the latent dimension d = {d}, got {N}")
    if mode not in ("lowrank", "full"):
        raise DDMError(f"mode must be 'lowrank' or 'full', got {mode!r}")
    sign = None
    if dale is not None:
        _number(dale, "dale (the fraction of excitatory neurons)", 0, 1)
        # neurons 0 … n_exc − 1 excitatory, the rest inhibitory
        sign = np.where(np.arange(N) < int(round(dale * N)), 1.0, -1.0)
        if mode == "lowrank":
            # low-rank Dale (dale_lowrank_bounds) is a bounded joint fit: VarPro's decoders
            # are an unconstrained solve, and a fixed embedding leaves only that solve
            if method == "varpro" or fixed_embedding:
                raise DDMError("Dale's law at low rank trains decoders and embedding jointly "
                               "under sign bounds: use --method joint (or auto), without "
                               "--fixed-embedding")
            method = "joint"
    mask_info = None
    if mask is not None:
        if mode != "full":
            raise DDMError("a connectivity mask needs full connectivity: use --mode full with "
                           "--mask")
        mask, mask_info = make_mask(mask, N, seed)
    tau = _tau(tau)
    visited = check_fraction(visited)
    visit_runs = _number(visit_runs, "visit_runs", 0, 100000, integer=True)
    revisit = _number(revisit, "revisit", 0, 10, integer=True)
    if self_check_time is not None:     # None: the default length; 0: no self-check
        self_check_time = _number(self_check_time, "self_check_time", 0)
    sigma_private = _number(sigma_private, "sigma_private", 0)
    reg = _number(reg, "reg", 0)
    if method not in ("auto", "joint", "varpro"):
        raise DDMError(f"method must be 'auto', 'joint' or 'varpro', got {method!r}")
    if method == "auto":
        method = "varpro" if N <= VARPRO_MAX_N else "joint"
    max_iter = default_iterations(N, method) if max_iter is None else _number(
        max_iter, "max_iter", 0, integer=True)
    tol = _number(tol, "tol", 0)
    seed = _number(seed, "seed", 0, 2**63 - 1, integer=True)
    test_samples = _number(test_samples, "test_samples", 16, integer=True)
    unknowns = N + 1 + p          # decoder unknowns per latent dimension
    # default: 6000 per latent dimension, at least 4 per unknown, at most 65536
    K_default = int(min(65536, max(min(32768, 6000 * d), 4 * unknowns)))
    K = _number(samples, "samples", 1, integer=True) if samples else K_default
    require(fit_memory(N, d, p, K, mode), f"fitting {N} neurons ({mode})",
            "use fewer --neurons" + (" or the low-rank mode" if mode == "full" else ""))
    if K < max(64, 2 * unknowns):
        raise DDMError(f"{K} training samples are too few for {N} neurons: the decoders have "
                       f"{unknowns} unknowns per latent dimension, so use --samples >= "
                       f"{max(64, 2 * unknowns)}" + ("" if samples else " (or fewer --neurons)"))
    rng = np.random.default_rng(seed)
    t_start = time.perf_counter()
    say = (lambda msg: print(msg, file=progress, flush=True)) if progress else (lambda msg: None)
    ckpt_meta = {"system": system.name, "system_record": system.record(), "neurons": N,
                 "mode": mode, "seed": seed, "samples": K, "tau": tau}
    ckpt = Checkpointer(checkpoint, ckpt_meta) if checkpoint is not None else None
    start = None
    if resume is not None:
        rmeta, start = load_checkpoint(resume)
        check_resume(rmeta, start, resume, system, N, mode, seed, K, tau)
        say(f"resuming from {resume}: {rmeta['stage']} stage, iteration {rmeta.get('iteration')}"
            f", loss {rmeta.get('loss', float('nan')):.4e}")
        start["stage"] = rmeta["stage"]

    # 1. samples (measure.py): a mixture of the box and the target's own states, training and
    # held-out from different runs; Λ from the drift's spread where the dynamics lives
    measure = training_measure(system, K, int(test_samples), visited, visit_runs, rng, say)
    z, u, z_test, u_test = measure["z"], measure["u"], measure["z_test"], measure["u_test"]
    f, g = evaluate(system, z, u if p else None)
    f_test, g_test = evaluate(system, z_test, u_test if p else None)
    zb, ub = measure["z_box"], measure["u_box"]
    fb, gb = evaluate(system, zb, ub if p else None)
    n_vis = measure["n_visited"]
    spread = f[K - n_vis:] if n_vis >= 2 else f
    var = spread.var(axis=0)
    lam = 1.0 / np.where(var > 0, var, 1.0)
    data = DriftData(z, u, f, lam, tau, backend)
    say(f"fit {system.name}: N={N}, d={d}, mode={mode}, K={K} training samples ({n_vis} on the "
        f"target's own states), {len(z_test)} held-out, seed={seed}")

    # 2. embedding and ridge decoders. The penalty λ_A ‖A‖²_F gets λ_A = reg · mean(Λ) / τ²:
    # A carries τ f, so this makes `reg` dimensionless (the same for a drift of size 1 or 1000).
    # The joint optimization and the full mode need some penalty to stay well conditioned (below
    # about 1e-8 L-BFGS-B stalls on the first line search: the decoders grow large and cancel), so
    # they use max(reg, 1e-8); the low-rank decoders are then solved once more in closed form at
    # `reg` itself, for the final embedding. On the built-ins reg = 1e-10 gives a 3–5× smaller
    # held-out e_f than 1e-8 and the Jacobian (fixed-point eigenvalues) follows: lorenz's origin
    # eigenvalue −β = −2.667 came out at −2.77 with 1e-8.
    reg_A = reg * float(np.mean(lam)) / tau ** 2
    reg_joint = max(reg, 1e-8) * float(np.mean(lam)) / tau ** 2
    M, c = initial_embedding(system.domain, N, rng)   # drawn even on resume: rng stays in step
    lowrank_dale = sign is not None and mode == "lowrank"
    if lowrank_dale:
        M = np.abs(M)        # encoders in the positive orthant (dale_lowrank_bounds)
    stages = {}
    if start is not None and "A" in start:
        A, b_z, B_z, M, c = (start["A"], start["b_z"], start["B_z"].reshape(d, p), start["M"],
                             start["c"])
    elif start is not None:
        M, c = start["M"], start["c"]
        A, b_z, B_z = ridge_decoders(data, M, c, reg_joint)
    else:
        A, b_z, B_z = ridge_decoders(data, M, c, reg_joint)
    if lowrank_dale:         # a feasible start: each decoder column clipped to its sign
        A = np.where(A * sign[None, :] >= 0, A, 0.0)
    # 3. joint L-BFGS-B over decoders and embedding (low-rank)
    decoders_at_reg = False
    if not fixed_embedding and (start is None or start["stage"] == "drift"):
        if method == "varpro":
            (A, b_z, B_z, M, c), stages["lowrank"] = _varpro_drift(
                data, (A, b_z, B_z, M, c), reg_A, max_iter, tol, progress, checkpoint=ckpt)
            decoders_at_reg = True
        else:
            (A, b_z, B_z, M, c), stages["lowrank"] = _joint_drift(
                data, (A, b_z, B_z, M, c), reg_joint, max_iter, tol, progress, ckpt,
                sign=sign if lowrank_dale else None)
            # an unconstrained ridge solve would undo the signs
            decoders_at_reg = lowrank_dale
    if reg_A != reg_joint and not decoders_at_reg:
        A, b_z, B_z = ridge_decoders(data, M, c, reg_A)
        stages["decoders"] = {"reg": reg}
    B_in = M @ B_z if p else None  # on-manifold input weights: P B_in = B_z
    net = Network(tau, M, c, M @ b_z + c, np.zeros((d, system.m)), np.zeros((d, system.m, N)),
                  sigma_private, A=A, B_in=B_in)

    # 4. full connectivity: quadratic in (W, b, B_in) with the embedding fixed
    if mode == "full" and start is not None and start["stage"] == "diffusion":
        net = Network(tau, M, c, start["b"], net.S0, net.R, sigma_private, W=start["W"],
                      B_in=start["B_in"] if p else None)
    elif mode == "full":
        lam_perp = perp_weight * float(np.mean(lam))
        # the ridge λ_W: L-BFGS-B needs reg_joint's 1e-8 to stay conditioned (see 2.); ADMM,
        # used under a box, solves each step exactly and takes `reg` itself, as the low-rank
        # decoders do
        box = dale is not None or mask is not None
        gram = FullGram(data, M, c, net.P, lam_perp, reg_A if box else reg_joint, mask)
        W0 = M @ A
        bounds = None
        lo = np.full((N, N), -np.inf)
        hi = np.full((N, N), np.inf)
        if dale is not None:
            W0 = np.where(W0 * sign[None, :] >= 0, W0, 0.0)
            lo = np.where(sign > 0, 0.0, -np.inf)[None, :].repeat(N, 0)
            hi = np.where(sign > 0, np.inf, 0.0)[None, :].repeat(N, 0)
        b0, B0 = net.b, B_in if p else np.zeros((N, 0))

        def masked_point():
            """The rows' own regressions (FullGram.masked_start at the current ridge), made
            feasible for Dale's law: the low-rank W with entries cut out is a poor start
            (measured: ring_wells at half density ended at e_f 0.8)."""
            Wm, bm, Bm = gram.masked_start(mask)
            if dale is not None:
                Wm = np.where(Wm * sign[None, :] >= 0, Wm, 0.0)
            return gram.packer.pack({"W": Wm, "b": bm, "B_in": Bm})

        if mask is not None:
            # lo = hi = 0: L-BFGS-B holds these at exactly zero (a fixed variable)
            lo, hi = np.where(mask, lo, 0.0), np.where(mask, hi, 0.0)
        if dale is not None or mask is not None:
            free = np.full(N + N * p, np.inf)
            bounds = scipy.optimize.Bounds(np.concatenate([lo.ravel(), -free]),
                                           np.concatenate([hi.ravel(), free]))
        x0 = masked_point() if mask is not None else \
            gram.packer.pack({"W": W0, "b": b0, "B_in": B0})
        if start is not None and start["stage"] == "full W":
            x0 = gram.packer.pack({"W": start["W"], "b": start["b"], "B_in": start["B_in"]})

        def snapshot_full(x):
            return dict(gram.packer.unpack(x), M=M, c=c)

        # The loss sees the drift on the manifold only; a full W may still push states away
        # from it (measured: ou2d with a 20 % mask, e_f 2e-4 but an off-manifold growth rate
        # +2/τ, the sampled network's std +99 %). So the transverse stability is checked at
        # held-out states and, while a direction off the manifold grows, W is refitted on a
        # tube around the manifold (FullGram.set_tube) of √10× the width of the round before.
        # (A 10× ridge was used before; the tube buys more stability per unit of fit: masked
        # E/I ring_wells, N = 256, p = 0.5, growth 5.9/τ at loss 126 against 5.2/τ at 2790.)
        # With a box (mask or Dale's law) the quadratic is solved by ADMM (admm.py; L-BFGS-B
        # stopped far from the optimum: loss 123 at its 300 iterations where ADMM reaches 2.1
        # in 3000 of its cheaper ones); without one, L-BFGS-B on the one BLAS thread the fit keeps
        # (threads.one_blas_thread), as before.
        def solve_round(x0, key):
            """W fitted at the current tube from x0, with its growth and drift error recorded
            in stages[key]: (x, growth, that stage's info)."""
            if bounds is not None:
                x, info = gram.solve(x0, bounds.lb, bounds.ub, ADMM_ITERATIONS * max_iter, tol,
                                     progress, checkpoint=ckpt, snapshot=snapshot_full)
            else:
                x, info = _minimize(gram.loss_grad, x0, "full W", max_iter, tol, progress,
                                    blas_threads=None, snapshot=snapshot_full,
                                    checkpoint=ckpt)
            W_fit = gram.packer.unpack(x)["W"]
            growth = transverse_growth(W_fit, M, c, z_test[:STABILITY_STATES])
            info.update(transverse_growth=growth, tube=gram.tube)
            if gram.tube > 0:        # the fit on the manifold alone, for the record
                info["loss_manifold"] = gram.manifold_loss(x)
            info["drift_error"] = gram.drift_error(x)
            stages[key] = info
            return x, growth, info

        first, budget, stable_at, below = None, None, None, 0.0
        for attempt in range(STABILITY_ROUNDS):
            x, growth, info = solve_round(x0, "full" if attempt == 0 else
                                          f"full, tube {gram.tube:.4g}")
            error = info["drift_error"]
            if budget is None:
                first_error = error
                budget = max(TUBE_ERROR_FACTOR * first_error, TUBE_ERROR_FLOOR)
            # a stable W that no longer fits is not a fit: a tube may raise the relative drift
            # error on the training states to TUBE_ERROR_FACTOR× the first round's, or to
            # TUBE_ERROR_FLOOR where that is more, no further (measured: ou2d with a 10 % mask
            # is stable at a tube of 0.03 with the error 0.0058 → 0.056, e_f 1.7e-2, faithful;
            # ring_wells with a 20 % mask reaches 0.16 from 0.027 at the first tube, still
            # growing at 28/τ)
            spoilt = error > budget
            first = (x, growth) if first is None else first
            if growth < 0 and not spoilt:
                stable_at = (gram.tube, info) if gram.tube > 0 else None
                break
            if spoilt or attempt == STABILITY_ROUNDS - 1:
                # no tube made it stable at a fit worth having: keep the best-fitting W, the
                # first (a W both unstable and less accurate is the worst of both), and say so
                x, growth = first
                info["kept"] = ("the first round (no round was stable" +
                                (f"; a tube of width {gram.tube:.3g} raised the drift error "
                                 f"from {first_error:.3g} to {error:.3g})" if spoilt else ")"))
                warnings.warn(f"the full network is unstable off its manifold (growth rate "
                              f"{growth:.3g}/τ at held-out states), and no tube around the "
                              "manifold made it stable without spoiling the fit: its samples "
                              "may leave the manifold; use a denser --mask or more --neurons",
                              FitWarning, stacklevel=2)
                break
            below = gram.tube
            tube = TUBE_START if gram.tube == 0 else gram.tube * math.sqrt(10.0)
            say(f"  off the manifold the network is unstable (growth rate {growth:.3g}/τ at "
                f"held-out states): refitting W on a tube of width {tube:.3g} around it")
            gram.set_tube(tube)
            x0 = x
        if stable_at is not None:
            # The ladder's steps are coarse (√10 in width, 10× in the penalty) and the fit
            # falls with the tube (the on-manifold loss is non-decreasing in σ: each round is
            # the minimum of a convex loss with a larger penalty), so the narrowest stable tube
            # is the best fit: bisect in log σ between the last unstable width and the first
            # stable one (below the first tube, from a tenth of it), keeping the narrowest
            # stable round within the error budget (measured: ou2d with a 50 % mask, unstable
            # at +0.25/τ without a tube and at −0.53/τ on 0.003 with the drift error 1.5e-5 →
            # 3.2e-3)
            hi_t, best_info = stable_at
            lo_t, best = (below if below > 0 else hi_t / 10.0), x
            for _ in range(TUBE_REFINE):
                mid = math.sqrt(lo_t * hi_t)
                gram.set_tube(mid)
                xm, gm, im = solve_round(best, f"full, tube {mid:.4g} (refined)")
                if gm < 0 and not im["drift_error"] > budget:
                    hi_t, best, best_info = mid, xm, im
                else:
                    lo_t = mid
            best_info["kept"] = f"the narrowest stable tube found, {hi_t:.4g}"
            x = best
            say(f"  kept the narrowest stable tube found: {hi_t:.3g}")

        prm = gram.packer.unpack(x)
        if mask is not None:        # the solvers held them at zero; this makes it a guarantee
            prm["W"] = np.where(mask, prm["W"], 0.0)
        net = Network(tau, M, c, prm["b"], net.S0, net.R, sigma_private, W=prm["W"],
                      B_in=prm["B_in"] if p else None)
        if mask is not None:
            net.meta["mask"] = mask_info

    # 5. diffusion (a checkpoint from here on holds the finished drift)
    if ckpt is not None:
        done = ({"A": net.A, "b_z": net.b_z, "B_z": net.B_z} if net.mode == "lowrank" else
                {"W": net.W, "b": net.b, "B_in": net.B_in if p else np.zeros((N, 0))})
        ckpt.save("diffusion", dict(done, M=net.M, c=net.c), math.nan, 0, force=True)
    S0, R, stages["diffusion"] = fit_diffusion(system, net, z, g, reg, max_iter, tol, progress)
    net = net.with_noise(S0, R)

    # 6. the self-check (selfcheck.py): sample network and target; where the network is not
    # faithful, add the states it visits that the target does not and refit from where it is
    # (so spurious attractors are trained away), keeping the refit only if it checks better
    check, far = None, []
    if self_check_time != 0:
        check = _self_check(system, net, measure, seed, self_check_time, say, far)
    for round_ in range(revisit if mode == "lowrank" and not fixed_embedding else 0):
        if check is None or check["verdict"] != "not faithful":
            break
        extra = far[-1][: K // 4] if far else np.zeros((0, d))
        say(f"revisit {round_ + 1}: adding {len(extra)} states the network visits and the "
            "target does not, and refitting")
        _, ue = sample_domain(system, len(extra), rng)
        fe, ge = evaluate(system, extra, ue if p else None)
        z2, u2 = np.concatenate([z, extra]), np.concatenate([u, ue])
        f2, g2 = np.concatenate([f, fe]), np.concatenate([g, ge])
        data2 = DriftData(z2, u2, f2, lam, tau, backend)
        start2 = (net.A, net.b_z, net.B_z, net.M, net.c)
        if method == "varpro":
            (A2, b2, B2, M2, c2), info = _varpro_drift(data2, start2, reg_A, max_iter, tol,
                                                       progress, stage=f"revisit {round_ + 1}")
        else:
            (A2, b2, B2, M2, c2), info = _joint_drift(
                data2, start2, reg_joint, max_iter, tol, progress, None,
                stage=f"revisit {round_ + 1}", sign=sign if lowrank_dale else None)
            if reg_A != reg_joint and not lowrank_dale:
                A2, b2, B2 = ridge_decoders(data2, M2, c2, reg_A)
        net2 = Network(tau, M2, c2, M2 @ b2 + c2, net.S0, net.R, sigma_private, A=A2,
                       B_in=M2 @ B2 if p else None)
        S02, R2, _ = fit_diffusion(system, net2, z2, g2, reg, max_iter, tol, progress)
        net2 = net2.with_noise(S02, R2)
        check2 = _self_check(system, net2, measure, seed, self_check_time, say, far)
        kept = (check2["verdict"] == "faithful" or
                check2.get("tv_ratio_max", math.inf) < check.get("tv_ratio_max", math.inf))
        info.update(added_states=int(len(extra)), kept=bool(kept),
                    verdict=check2["verdict"], tv_ratio_max=check2.get("tv_ratio_max"))
        stages[f"revisit {round_ + 1}"] = info
        if not kept:
            break
        net, check, z, u, f, g = net2, check2, z2, u2, f2, g2
    if check is not None and check["verdict"] == "not faithful":
        warnings.warn(selfcheck.describe(check), FitWarning, stacklevel=2)

    # 7. figures of fit on held-out samples: where the dynamics lives, and on the box apart
    figures = figures_of_fit(system, net, z_test, u_test if p else None, f_test, g_test)
    box = figures_of_fit(system, net, zb, ub if p else None, fb, gb)
    figures.update({k + "_box": v for k, v in box.items() if not k.endswith("_components")})
    figures["held_out_on"] = measure["held_out_on"]
    figures["e_f_train"] = relative_error(net.latent_drift(z, u if p else None), f)
    if figures["e_f"] > max(0.05, 10 * figures["e_f_train"]):
        warnings.warn(f"the network fits its {K} training samples (e_f {figures['e_f_train']:.3g}"
                      f") far better than held-out ones (e_f {figures['e_f']:.3g}): too few "
                      "samples for this many neurons; use more --samples or fewer --neurons",
                      FitWarning, stacklevel=2)
    net.meta.update({
        "system": system.record(),
        "training": {"mode": mode, "neurons": N, "seed": seed, "tau": tau, "samples": K,
                     "test_samples": int(test_samples), "max_iter": max_iter, "tol": tol,
                     "reg": reg, "fixed_embedding": bool(fixed_embedding), "dale": dale,
                     "visited": visited, "visit_runs": visit_runs, "revisit": revisit,
                     "method": method,
                     "sigma_private": sigma_private, "perp_weight": perp_weight,
                     "device": device, "device_reason": device_reason,
                     "blas_threads": BLAS_THREADS, "measure": measure["summary"],
                     "stages": stages, "seconds": time.perf_counter() - t_start},
        "fit": figures,
        "version": __version__,
    })
    if dale is not None:
        net.meta["dale"] = {"fraction_excitatory": dale, "n_excitatory": int(np.sum(sign > 0)),
                            "formulation": "full W, signed columns" if mode == "full" else
                            "W = M A with M >= 0 and signed columns of A"}
    if check is not None:
        net.meta["self_check"] = check
    say("figures of fit (held-out, " + figures["held_out_on"] + "): " +
        ", ".join(f"{k} = {v:.3g}" for k, v in figures.items() if isinstance(v, float)))
    return net


def _self_check(system, net, measure, seed, check_time, say, far):
    """selfcheck.self_check from the held-out runs' states (on the attractor, after their
    burn-in); the network states far from the target's go to the list ``far``."""
    ends = measure["check_states"]
    if ends is None or len(ends) == 0:
        vis = visit(system, selfcheck.TRIALS, seed ^ 0x5E1F)
        ends = vis.pooled() if len(vis.z) else None
    if ends is None or len(ends) == 0:
        say("self-check: skipped (every target run from the box escaped)")
        return {"verdict": "unchecked", "problems": ["every target run from the box escaped"]}
    say(f"self-check: sampling network and target ({selfcheck.TRIALS} trials × "
        f"{check_time or selfcheck.check_time(system):g} time units) ...")
    check = selfcheck.self_check(system, net, ends, seed, time=check_time, states=far)
    say(selfcheck.describe(check) + f" [{check['seconds']:.1f}s]")
    return check


def training_measure(system, K, K_test, fraction, runs, rng, say):
    """Training and held-out states (measure.py): K·fraction training states from target runs
    started in the box (3 runs of 4 for training, the 4th for held-out states), the rest uniform
    over the box; K_test held-out states from the visited runs and K_test more from the box."""
    z_box, u_box = sample_domain(system, K_test, rng)
    n_vis = int(round(fraction * K)) if runs else 0
    vis = None
    held_out_on = "box"
    if n_vis:
        n_runs = int(runs)
        vis = visit(system, n_runs + max(1, n_runs // 3), int(rng.integers(2**62)))
        kept = len(vis.z)
        if vis.escaped:
            say(f"  {vis.escaped} of {vis.started} target runs from box points escaped the box "
                "and were dropped")
        if kept < 2:
            warnings.warn(f"all but {kept} of {vis.started} target runs from box points escaped "
                          "the box: training on the box alone; give the states yourself "
                          "(visited=) or shrink the box", FitWarning, stacklevel=3)
            n_vis = 0
    n_train_runs = 0
    if n_vis:
        n_train_runs = max(1, (3 * kept) // 4)
        z_vis = pick(vis.pooled(slice(0, n_train_runs)), n_vis, rng)
        z_test = pick(vis.pooled(slice(n_train_runs, None)), K_test, rng)
        held_out_on = "visited states of separate target runs"
    z_uni, u_uni = sample_domain(system, K - n_vis, rng)
    if n_vis:
        _, u_vis = sample_domain(system, n_vis, rng)
        _, u_test = sample_domain(system, K_test, rng)
        z = np.concatenate([z_uni, z_vis])
        u = np.concatenate([u_uni, u_vis])
    else:
        z, u = z_uni, u_uni
        z_test, u_test = sample_domain(system, K_test, rng)
    summary = {"visited_fraction": n_vis / K, "box_fraction": 1 - n_vis / K}
    if vis is not None:
        summary.update(vis.summary(system.domain), training_runs=n_train_runs)
    return {"z": z, "u": u, "z_test": z_test, "u_test": u_test, "z_box": z_box, "u_box": u_box,
            "n_visited": n_vis, "held_out_on": held_out_on, "summary": summary,
            "check_states": vis.pooled(slice(n_train_runs, None)) if n_vis else None}


def figures_of_fit(system, net, z, u, f, g):
    """e_f, e_D (docs/model.md §4f) on the given samples, and the off-manifold drift of full
    models."""
    D = np.einsum("kam,kbm->kab", g, g)
    fn = net.latent_drift(z, u)
    out = {"e_f": relative_error(fn, f),
           "e_D": relative_error(net.latent_diffusion(z), D),
           "e_f_components": [relative_error(fn[:, a], f[:, a]) for a in range(f.shape[1])]}
    if net.mode == "full":
        Fp = net.off_manifold_drift(z, u)
        out["off_manifold_rel"] = math.sqrt(float(np.sum(Fp ** 2)) / float(np.sum(f ** 2)))
    return out


def fit_diffusion(system, net, z, g, reg, max_iter, tol, progress):
    """S0 and R (docs/model.md §3c, §5 step 4): closed form for constant D, else ridge +
    L-BFGS-B."""
    d, m, N = system.d, system.m, net.N
    D_private = net.sigma_private ** 2 * (net.P @ net.P.T)
    if system.constant_diffusion:
        g0 = g[0]
        D0 = g0 @ g0.T
        rest = D0 - D_private
        if np.linalg.eigvalsh(rest).min() < -1e-12 * max(1.0, np.abs(D0).max()):
            raise DDMError("the private noise sigma_private is larger than the target's "
                           "diffusion allows (D − σ_p² P Pᵀ is not positive semi-definite); "
                           "lower --sigma-private")
        if net.sigma_private == 0:
            S0 = g0.copy()
        else:  # symmetric square root of what is left, padded/truncated to m columns
            w, V = np.linalg.eigh(rest)
            root = V @ np.diag(np.sqrt(np.clip(w, 0, None))) @ V.T
            S0 = np.zeros((d, m))
            S0[:, : min(d, m)] = root[:, : min(d, m)]
            if m < d:
                S0 = root[:, :d]
        return S0, np.zeros((d, S0.shape[1], N)), {"method": "closed form"}
    # state-dependent: S has g's structure and is linear in (S0, R) -> ridge on g as a start
    K = len(z)
    Y = np.ascontiguousarray(g.reshape(K, d * m))
    G, C, _ = cpu.gram_statistics(np.ascontiguousarray(z), np.zeros((K, 0)), Y,
                                  np.ascontiguousarray(net.M.T), np.ascontiguousarray(net.c))
    ridge = np.full(N + 1, reg)
    ridge[N] = 0.0
    coef = ridge_solve(G, C, ridge)  # (N + 1, d m)
    R0 = coef[:N].T.reshape(d, m, N)
    S00 = coef[N].reshape(d, m)
    packer = Packer({"S0": (d, m), "R": (d, m, N)})
    Dt = np.ascontiguousarray(np.einsum("kam,kbm->kab", g, g))
    scale_D = 1.0 / max(float(np.mean(np.sum(Dt ** 2, axis=(1, 2)))), 1e-300)
    zc = np.ascontiguousarray(z)

    def objective(x):
        loss, grad = diffusion_loss_grad(x, packer, zc, Dt, net.M, net.c, D_private, reg)
        return loss * scale_D, grad * scale_D

    x, info = _minimize(objective, packer.pack({"S0": S00, "R": R0}), "diffusion", max_iter,
                        tol, progress)
    prm = packer.unpack(x)
    info["method"] = "ridge on g, then L-BFGS-B"
    return prm["S0"].copy(), prm["R"].copy(), info
