"""Learning a network from observed trajectories, when no equations are known.

Observations z_k of an SDE dz = f dt + g dB at spacing Δt give, pair by pair (k, k+1),

    E[Δz | z] = f(z) Δt + O(Δt²),     E[(Δz − f Δt)(Δz − f Δt)ᵀ | z] = D(z) Δt + O(Δt²)

so the increments y_k = Δz_k / Δt are noisy but (to O(Δt)) unbiased targets for the drift, and the
residuals r_k r_kᵀ / Δt for D. Least squares over many pairs averages the noise away, with no
binning: the same losses as docs/model.md §4 with y_k in place of f(z_k) ("increment matching").

1. increment matching: random embedding M, c over the central 99 % box of the visited states, its
   gain scale (GAIN_PATH, down to near-polynomial features shared over the whole region: the
   increments are noise-dominated, and smoother features pay less variance) chosen on held-out
   trials from up to SELECT_PAIRS pairs; decoders A, b_z by ridge regression on the increments
   (one O(K N²) pass for the Gram statistics), the penalty chosen per output on held-out trials
   from a path of values (the noise makes it matter), each output's increments weighted by the
   inverse of its noise variance modelled over the states (maximum likelihood, ``weighted``);
   then the O(Δt) Itô–Taylor bias of the targets, (Δt/2) L f, is removed with the network's own
   analytic generator (``ito``; same Gram matrices, new right-hand sides);
2. adjoint refinement (coarse Δt): one-step Euler targets are biased by O(Δt) when Δt is not small
   against the dynamics. From each observed z(t_i) the network's latent drift is integrated with
   RK4 over Δt (``substeps`` steps of Δt/substeps) and compared with z(t_{i+1}) less the
   diffusion's share of its conditional mean, (Δt²/2) · ½ D : ∇∇f̂ (the flow map is the mean's
   deterministic part only) — and (A, b_z, M, c) are refined by L-BFGS-B with the gradient of the
   discrete adjoint (ddm_numba.learn.multistep), on up to ``refine_pairs`` pairs, early-stopped
   on the held-out trials' multi-step loss; the increment-matching solution is kept when no
   iterate lowers that loss;
3. diffusion: D = mean of r rᵀ / Δt over the residuals of the final drift (constant), or (state
   noise) a ridge regression of r rᵀ/Δt on the features with the penalty per entry chosen on
   held-out residuals, corrected for the flow's O(Δt) distortion of the noise (J D + D Jᵀ) Δt/2,
   then S0, R fitted to it by the diffusion loss of docs/model.md §4.

Figures of fit on held-out trials: the predictive error of the increments (noise-dominated: it
cannot go below the noise floor, reported alongside when the truth is known) and, where the data
came from a known system, e_f and e_D against the truth at the held-out points (the region the data
visits).
"""
import math
import sys
import time
from typing import NamedTuple

import numpy as np

from .._version import __version__
from ..backends import DEFAULT_DEVICE, cpu, select
from ..blocks import row_blocks
from ..errors import DDMError, checked_number as _number
from ..matching import _tau, fit_memory, initial_embedding, relative_error
from ..network import Network
from ..resources import require
from ..systems import get_system, system_from_record
from ..threads import BLAS_THREADS, one_blas_thread
from ..training import (Packer, _minimize, diffusion_objective, lowrank_scale,
                        ridge_path_error, ridge_solve)
from .data import load_observations, _split
from .multistep import integrate, multistep_loss_grad


def _truth(obs, truth):
    """The system the data came from, if known: ``truth`` (the caller's explicit spec or
    System), else a built-in named in the file's metadata. A user system named in the file is
    not loaded (files never run code): then there is no truth unless ``truth`` names it."""
    if truth is False:
        return None
    if truth is not None:
        return get_system(truth)
    sysmeta = obs.meta.get("system")
    if sysmeta is None:
        return None
    try:
        return system_from_record(sysmeta, what=obs.source)
    except DDMError:
        return None


GAIN_PATH = (1 / 32, 1 / 16, 1 / 8, 0.25, 0.5, 1.0, 2.0)   # scales of initial_embedding's
#   gains U(0.5, 3), tried: small ones make near-polynomial features, shared over the whole region
SELECT_PAIRS = 1000000              # training pairs for choosing the gain scale: the held-out
#   differences between scales are ~1e-5 of the loss (the increments are noise-dominated), so
#   a small subset picks at random among them


def _subset(n, k, rng):
    return slice(None) if n <= k else np.sort(rng.choice(n, k, replace=False))


def _drift(A, b_z, M, c, tau, z):
    """f_net(z) = (1/τ)(−z + A φ(M z + c) + b_z) for the rows of z (in row blocks: every function
    here that evaluates features does, so that memory is O(N) per row block, not O(K N))."""
    out = np.empty_like(z, dtype=float)
    for sl in row_blocks(len(z), M.shape[0]):
        out[sl] = (np.tanh(z[sl] @ M.T + c) @ A.T + b_z - z[sl]) / tau
    return out


def _generator_of_drift(A, b_z, M, c, tau, z, D, deterministic=True):
    """L f = J f + ½ Σ_bc D_bc ∂_b ∂_c f (the Itô generator applied to the network's drift),
    rows of z, for constant D. With h = M z + c, φ' = 1 − φ², φ'' = −2 φ φ':
        J f = (1/τ)(−f + A (φ' ⊙ M f)),   ½ D : ∇∇f_a = (1/2τ) Σ_n A_an φ''_n (M_n D M_nᵀ).
    deterministic=False leaves out J f: the diffusion's part ½ D : ∇∇f alone (see _refine)."""
    q = np.einsum("nb,bc,nc->n", M, D, M)
    out = np.empty_like(z)
    for sl in row_blocks(len(z), M.shape[0]):
        zs = z[sl]
        ph = np.tanh(zs @ M.T + c)
        dph = 1.0 - ph * ph
        out[sl] = (-ph * dph * q) @ A.T / tau
        if deterministic:
            f = (ph @ A.T + b_z - zs) / tau
            out[sl] += (-f + (dph * (f @ M.T)) @ A.T) / tau
    return out


def _cross(M, c, z, Y):
    """C = (1/K) Σ_k ψ_k Y_kᵀ, ψ = [φ(M z + c); 1]: the right-hand side of the ridge alone."""
    C = np.zeros((M.shape[0] + 1, Y.shape[1]))
    for sl in row_blocks(len(z), M.shape[0]):
        C[:-1] += np.tanh(z[sl] @ M.T + c).T @ Y[sl]
        C[-1] += Y[sl].sum(axis=0)
    return C / len(z)


def _ridge_per_column(G, C, Gv, Cv, sv, path=tuple(10.0 ** k for k in range(-10, 0))):
    """Ridge of every column of C on the features, each column's penalty chosen from ``path`` (in
    units of the mean diagonal of G; the constant feature, last, is not penalized) by the held-out
    error from the held-out Gram statistics Gv, Cv, sv = mean(y²) (training.ridge_path_error).
    Returns (coefficients like C, penalty per column, least held-out error per column)."""
    unit = np.r_[np.ones(len(G) - 1), 0.0] * np.trace(G) / len(G)
    errs = np.array([ridge_path_error(ridge_solve(G, C, p * unit), Gv, Cv, sv) for p in path])
    chosen = np.array([path[k] for k in np.argmin(errs, axis=0)])
    return ridge_solve(G, C, chosen[:, None] * unit[None, :]), chosen, errs.min(axis=0)


WEIGHT_CAP = 10.0   # no increment weighs more than this many times the average (see _noise_weights)


def _noise_weights(ridge, r, rv, dt):
    """Per-sample, per-output weights 1 / D̂_aa(z) for the increments: maximum likelihood.

    The Euler increments are Gaussian given z, Δz ~ N(f Δt, D(z) Δt), so their log-likelihood is
    −½ Σ_k (Δz_k − f Δt)ᵀ D(z_k)⁻¹ (Δz_k − f Δt)/Δt + const (Girsanov's, discretized): least squares
    weighted by the inverse diffusion. Unweighted least squares is still unbiased but, where D
    varies over the visited states, lets the noisiest region set the variance of the whole fit.
    Here each output a is weighted by 1/D̂_aa (the diagonal of D⁻¹ alone; exact for diagonal D,
    still an unbiased and better-than-uniform estimator when the noise is correlated), with

        D̂_aa(z) = ψ(z)ᵀ η_a,   η_a ridge-regressed on the targets r_a²/Δt (r the residuals of the
                               unweighted fit), its penalty chosen on the held-out residuals rv,

    using the unweighted ridge's Gram matrices (same features, so no new pass). An output whose
    feature model of the variance does not predict the held-out r_a²/Δt better than its mean keeps
    uniform weights. D̂ is floored at mean/WEIGHT_CAP (a fitted variance can reach zero where data
    are sparse, and no region should take over the fit), and the weights are scaled to mean 1 over
    the training pairs. Returns (w (K, d), w_v (K_v, d), info) or (None, None, info) when every
    output stays uniform.
    """
    s, sv = r * r / dt, rv * rv / dt
    C = _cross(ridge.M, ridge.c, ridge._z, s)
    Cv = _cross(ridge.M, ridge.c, ridge._zv, sv)
    s2 = np.mean(sv ** 2, axis=0)
    eta, chosen, err = _ridge_per_column(ridge.G, C, ridge.Gv, Cv, s2)   # (N + 1, d)
    mean = s.mean(axis=0)
    constant = np.mean((sv - mean) ** 2, axis=0)                         # held-out error of the mean
    use = err < constant
    info = {"reg_per_output": chosen.tolist(), "held_out_error": err.tolist(),
            "held_out_error_constant": constant.tolist(), "weighted": use.tolist()}
    if not use.any():
        return None, None, info

    def weights(zs):
        return 1.0 / np.maximum(_features_times(ridge.M, ridge.c, zs, eta), mean / WEIGHT_CAP)

    w, wv = weights(ridge._z), weights(ridge._zv)
    norm = w.mean(axis=0)
    w, wv = w / norm, wv / norm
    w[:, ~use], wv[:, ~use] = 1.0, 1.0
    info["weight_range"] = [[float(w[:, a].min()), float(w[:, a].max())] for a in range(w.shape[1])]
    return w, wv, info


def _box(z):
    lo, hi = np.min(z, axis=0), np.max(z, axis=0)
    pad = 0.05 * np.maximum(hi - lo, 1e-6)
    return np.column_stack([lo - pad, hi + pad])


def _choose_gain(scores):
    """The gain scale, from scores [scale, drift CV error, (diffusion held-out error, drift
    signal, diffusion signal) with state noise] per candidate.

    Drift alone: the least cross-validation error. With a state-dependent diffusion, which shares
    the features, the least estimated e_f² + e_D² (the diffusion's error that of the fitted
    S Sᵀ against the held-out r rᵀ/Δt): each error is noise floor + model error, the
    floor the same for every scale, so a candidate's excess over the best, divided by the
    variance of the field it fits (the signal, taken once, from the best-drift candidate, so that
    the floor does not enter), is its excess in squared relative error. The increments are
    noise-dominated, so the drift's excesses are small, and a diffusion that cannot be made at a
    scale (polynomial-like features against sqrt(a + b z²), say) outweighs them, as it should."""
    best = min(scores, key=lambda g: g[1])
    if len(best) < 3:
        return best[0]
    best_D = min(g[2] for g in scores)
    return min(scores, key=lambda g: (g[1] - best[1]) / best[3] + (g[2] - best_D) / best[4])[0]


FOLDS = 5   # cross-validation folds over trials: the held-out trials are one of them


class _Ridge:
    """Ridge decoders on increments from Gram statistics, their penalty chosen by cross-validation
    over folds of trials.

    The Gram passes run on ``backend`` (backends.cpu or backends.cuda).
    Features ψ = [φ(M z + c); 1], targets Y = τ y + z (so that τ f_net = Θ ψ − z, as in
    matching.ridge_decoders). The pairs come in folds of whole trials: the held-out trials are
    fold 0, the training trials folds 1 … k−1 (``fold``, one label per training pair). Each fold j
    keeps its sums G_j = Σ ψψᵀ, C_j = Σ ψ Yᵀ, S_j = Σ Y² and count K_j, so a model trained without
    fold j is a solve with the other folds' sums, and its error on fold j costs nothing more.
    Per output a, with weights Λ_a:
        train (folds F):  (G_F/K_F + τ² λ / Λ_a · I_A) θ_a = C_F,a / K_F
        error on fold j:  Λ_a [θ_aᵀ G_j θ_a − 2 θ_aᵀ C_j,a + S_j,a] / (K_j τ²)
    which is Λ_a mean((f_net − y)_a²) on fold j, without touching its samples again.

    Why folds: the increments are noise-dominated (a model's drift error is ~1e-5 of the loss),
    so the penalty and the gain scale are chosen from differences that one held-out fifth of the
    data resolves only at about one standard error; every trial taking its turn as held-out data
    (cross-validation error, summed over folds) resolves them √k times better. The decoders
    themselves are then solved on the training folds only, so the held-out trials stay unseen by
    the fit and its figures.

    With ``weights`` = (w, w_v), per-sample weights of each output (see _noise_weights), every sum
    above carries them: G_a = Σ w_a ψψᵀ is then one Gram matrix per output, and the errors are the
    weighted errors the training minimizes.
    """

    def __init__(self, M, c, z, y, fold, zv, yv, lam, tau, weights=None, backend=cpu):
        self.N, self.tau, self.lam = M.shape[0], tau, lam
        self.M, self.c = M, c
        self.weights = weights          # None, or (w (K, d), w_v (K_v, d)): see _noise_weights
        self._MT = np.ascontiguousarray(M.T)
        self._z, self._zv = np.ascontiguousarray(z), np.ascontiguousarray(zv)
        self.fold = np.asarray(fold)
        self.k = int(self.fold.max()) + 1 if len(self.fold) else 1
        # the rows of each fold: fold 0 the held-out pairs, the others by label. fit_data passes
        # the training pairs sorted by fold, so each fold is a slice and its rows a view (no
        # per-fold copies of the states and targets); any other order is indexed
        if np.all(np.diff(self.fold) >= 0):
            edges = np.searchsorted(self.fold, np.arange(1, self.k + 1))
            self._rows = [None] + [slice(edges[j - 1], edges[j]) for j in range(1, self.k)]
        else:
            self._rows = [None] + [np.flatnonzero(self.fold == j) for j in range(1, self.k)]
        self.count = np.array([len(zv)] + [np.count_nonzero(self.fold == j)
                                           for j in range(1, self.k)], dtype=float)
        self.Gs, self.Cs, self.Ss = [], [], []
        for j in range(self.k):
            zj = self._zv if j == 0 else np.ascontiguousarray(self._z[self._rows[j]])
            Yj = tau * (yv if j == 0 else y[self._rows[j]]) + zj
            if weights is None:
                G, C, _ = backend.gram_statistics(zj, np.zeros((len(zj), 0)),
                                                  np.ascontiguousarray(Yj), self._MT, self.c)
                wj = 1.0
            else:                       # one Gram matrix per output: G (d, n, n)
                wj = weights[1] if j == 0 else weights[0][self._rows[j]]
                G, C = backend.weighted_gram_statistics(zj, np.ascontiguousarray(Yj),
                                                        np.ascontiguousarray(wj), self._MT, self.c)
            self.Gs.append(G * len(zj))
            self.Cs.append(C * len(zj))
            self.Ss.append(np.sum(wj * Yj ** 2, axis=0))

    def set_targets(self, y, yv):
        """New increments (same states, same weights): only the right-hand sides change."""
        self.Cs, self.Ss = [], []
        for j in range(self.k):
            zj = self._zv if j == 0 else self._z[self._rows[j]]
            Yj = self.tau * (yv if j == 0 else y[self._rows[j]]) + zj
            if self.weights is not None:
                wj = self.weights[1] if j == 0 else self.weights[0][self._rows[j]]
            else:
                wj = 1.0
            self.Cs.append(_cross(self.M, self.c, zj, wj * Yj) * len(zj))
            self.Ss.append(np.sum(wj * Yj ** 2, axis=0))

    def _sums(self, folds):
        K = sum(self.count[j] for j in folds)
        return (sum(self.Gs[j] for j in folds) / K, sum(self.Cs[j] for j in folds) / K)

    @property
    def training_folds(self):
        return list(range(1, self.k)) if self.k > 1 else [0]

    @property
    def G(self):
        """The training pairs' Gram matrix (mean), unweighted ridges only."""
        return self._sums(self.training_folds)[0]

    @property
    def Gv(self):
        return self.Gs[0] / self.count[0]

    def solve(self, reg, folds=None):
        """θ (d, N + 1) for a relative penalty ``reg`` (one number, or one per output (d,)),
        trained on ``folds`` (default: the training folds)."""
        G, C = self._sums(self.training_folds if folds is None else folds)
        reg = np.broadcast_to(np.asarray(reg, dtype=float), (len(self.lam),))
        ridge = np.zeros(C.shape[0])
        ridge[:self.N] = 1.0
        mean_lam = float(np.mean(self.lam))
        # λ_A = reg · mean(Λ)/τ² as in ``fit``; per output τ² λ_A / Λ_a on the A block
        penalty = np.array([ridge * self.tau ** 2 * (r * mean_lam / self.tau ** 2) / la
                            for r, la in zip(reg, self.lam)])
        if self.weights is None:
            return ridge_solve(G, C, penalty).T
        return np.array([ridge_solve(G[a], C[:, a], penalty[a]) for a in range(len(self.lam))])

    def error_per_output(self, theta, j=0):
        """Λ_a mean(w_a (f_net − y)_a²) on fold j (0: the held-out pairs), per output a (d,)."""
        G, C, S = self.Gs[j] / self.count[j], self.Cs[j] / self.count[j], self.Ss[j] / self.count[j]
        if self.weights is None:
            err = ridge_path_error(theta.T, G, C, S)
        else:
            err = np.array([ridge_path_error(theta[a][:, None], G[a], C[:, a:a + 1],
                                             S[a:a + 1])[0] for a in range(len(self.lam))])
        return self.lam * err / self.tau ** 2

    def held_out(self, theta):
        return float(np.sum(self.error_per_output(theta)))

    def fold_errors(self, reg):
        """(k, d): each fold's error, per output, under the model trained on the other folds."""
        if self.k == 1:
            return self.error_per_output(self.solve(reg))[None, :]
        return np.array([self.error_per_output(
            self.solve(reg, [i for i in range(self.k) if i != j]), j) for j in range(self.k)])

    def cross_validation_error(self, reg):
        """Per output, the fold-weighted mean of fold_errors (with one fold only, the held-out
        error of the training fit)."""
        errs = self.fold_errors(reg)
        return self.count[:len(errs)] @ errs / self.count.sum()

    def choose(self, path):
        """The penalty per output with the least cross-validation error over ``path`` (each
        output's error depends on its own penalty alone): returns (reg (d,), θ trained on the
        training folds, [(reg, error (d,))])."""
        scores = [(r, self.cross_validation_error(r)) for r in path]
        errs = np.array([s for _, s in scores])                 # (len(path), d)
        reg = np.array([path[k] for k in np.argmin(errs, axis=0)])
        return reg, self.solve(reg), scores


MAX_SUBSTEPS = 64   # RK4 steps per sampling interval: beyond this the flow map no longer changes


@one_blas_thread
def fit_data(data, neurons=256, *, seed=0, tau=1.0, holdout=0.2, reg=None, substeps=0,
             refine_iter=100, refine_pairs=100000, state_noise=False, max_pairs=2000000,
             gain=None, ito=True, weighted=True, truth=None, progress=sys.stderr,
             device=DEFAULT_DEVICE):
    """Fit a low-rank network to observed trajectories (increment matching + adjoint refinement).

    data: a trajectory file (``t``, ``z`` (trials, T, d)) or Trajectories. reg: ridge penalty
    (relative, as in ``fit``); None chooses it on held-out trials from 1e-10 … 1e-1. substeps: 0
    for increment matching alone, else the adjoint refinement with that many RK4 steps per
    sampling interval. gain: the scale of the encoders' gains (initial_embedding's U(0.5, 3)
    times gain, in units of the visited box); None chooses it on held-out trials from
    GAIN_PATH. ito: correct the increments' O(Δt) bias with the network's own Itô generator
    (E[Δz|z]/Δt = f + (Δt/2) L f). weighted: weight each output's increments by the inverse of
    its noise variance, modelled over the states (maximum likelihood where the noise depends on
    the state; uniform where it does not). truth: a system spec to score against (default: the one named in the
    file's metadata, if any; False for none). device: where the Gram passes of increment matching
    run ("cpu", "cuda", "auto": a GPU when one is usable); the refinement and the diffusion polish
    run on the CPU. Returns the Network; ``meta["fit"]`` holds the held-out figures.
    """
    t_start = time.perf_counter()

    def say(msg):
        if progress is not None:
            print(msg, file=progress, flush=True)

    backend, device_reason = select(device)
    N = _number(neurons, "neurons", 1, integer=True)
    tau = _tau(tau)
    seed = _number(seed, "seed", 0, 2**63 - 1, integer=True)
    if reg is not None:
        reg = _number(reg, "reg", 0)
    if gain is not None:
        gain = _number(gain, "gain", 0, low_open=True)
    substeps = _number(substeps, "substeps", 0, MAX_SUBSTEPS, integer=True)
    refine_iter = _number(refine_iter, "refine_iter (--max-iter)", 0, integer=True)
    obs = load_observations(data)
    d = obs.d
    require(fit_memory(N, d, 0, min(max_pairs, obs.z.shape[0] * obs.z.shape[1]), "lowrank")
            + 8 * obs.z.size * 4, f"fitting {N} neurons to {obs.source}", "use fewer --neurons")
    if N < d:
        raise DDMError(f"--neurons must be at least the latent dimension d = {d}, got {N}")
    if not 0 < holdout < 1:
        raise DDMError(f"holdout must be in (0, 1), got {holdout}")
    split, train, val = _split(obs, holdout)
    # folds of whole trials for cross-validation (_Ridge): the held-out trials are fold 0, the
    # training trials are cut into FOLDS − 1 consecutive groups
    groups = [g for g in np.array_split(np.asarray(train), min(FOLDS - 1, len(train))) if len(g)]
    parts = [split.pairs(g) for g in groups]
    z0 = np.concatenate([a for a, _ in parts])
    z1 = np.concatenate([b for _, b in parts])
    fold = np.concatenate([np.full(len(a), j + 1) for j, (a, _) in enumerate(parts)])
    v0, v1 = split.pairs(val)
    if len(z0) < 10 * N or len(v0) < 10:
        raise DDMError(f"{obs.source}: {len(z0)} training / {len(v0)} held-out increments are "
                       f"too few for {N} neurons (want at least 10 per neuron); record longer or "
                       "use fewer --neurons")
    rng = np.random.default_rng(seed)
    if len(z0) > max_pairs:           # the Gram pass is O(K N²): a random subset is plenty
        keep = np.sort(rng.choice(len(z0), max_pairs, replace=False))
        z0, z1, fold = z0[keep], z1[keep], fold[keep]
    dt = obs.dt
    with np.errstate(over="ignore"):
        y, yv = (z1 - z0) / dt, (v1 - v0) / dt
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(yv))) or \
            max(np.abs(y).max(), np.abs(yv).max()) > 1e100:
        raise DDMError(f"{obs.source}: the increments divided by the sampling interval "
                       f"Δt = {dt:g} overflow; rescale the time stamps 't'")
    var = y.var(axis=0)
    lam = 1.0 / np.where(var > 0, var, 1.0)
    domain = _box(np.concatenate([z0, v0]))
    say(f"fit from data {obs.source}: {obs.trials} trials, Δt = {dt:g}, {len(z0)} training / "
        f"{len(v0)} held-out increments, N = {N}, d = {d}, seed = {seed}")

    # 1. increment matching: encoders placed over the visited region, their gain scale and the
    # ridge penalty (per output) chosen on held-out trials
    t1 = time.perf_counter()
    visited = _box(np.column_stack([np.quantile(z0, 0.005, axis=0),
                                    np.quantile(z0, 0.995, axis=0)]).T)
    embed_seed = int(rng.integers(2**63 - 1))

    def embedding(s):
        # the same directions and thresholds for every s; gains U(0.5, 3) · s in box units
        return initial_embedding(visited, N, np.random.default_rng(embed_seed),
                                 gain=(0.5 * s, 3.0 * s))

    path = [reg] if reg is not None else [10.0 ** k for k in range(-10, 0)]
    gains = [gain] if gain is not None else list(GAIN_PATH)
    gain_scores = []
    if len(gains) > 1:            # on a subset: one Gram pass per candidate
        sub = _subset(len(z0), SELECT_PAIRS, rng)
        subv = _subset(len(v0), SELECT_PAIRS // 4, rng)
        for s in gains:
            M, c = embedding(s)
            ridge = _Ridge(M, c, z0[sub], y[sub], fold[sub], v0[subv], yv[subv], lam, tau,
                           backend=backend)
            reg_s, theta, scores = ridge.choose(path)
            score = [s, float(np.sum(ridge.cross_validation_error(reg_s)))]
            if state_noise:
                # the diffusion's features are the drift's (S(x) = S0 + R φ(x)), so the scale
                # must suit both (_choose_gain): the smoothed diffusion's held-out error at this
                # scale, from this scale's drift residuals, and the two signals' variances
                A_s, b_s = theta[:, :N], theta[:, N]
                zs, vs = z0[sub], v0[subv]
                rs = z1[sub] - zs - _drift(A_s, b_s, M, c, tau, zs) * dt
                rv = v1[subv] - vs - _drift(A_s, b_s, M, c, tau, vs) * dt
                net_s = Network(tau, M, c, M @ b_s + c, np.eye(d), np.zeros((d, d, N)), A=A_s)
                # (a lighter polish than the final one: a score, not the model)
                S0_s, R_s, _ = _state_noise(net_s, zs, rs, vs, rv, dt, None, max_polish=10000,
                                            G=ridge.G, Gv=ridge.Gv, polish_iter=100)
                net_s = net_s.with_noise(S0_s, R_s)
                D_s = net_s.latent_diffusion(vs).reshape(len(vs), d * d)
                target = np.einsum("ka,kb->kab", rv, rv).reshape(len(vs), d * d) / dt
                score += [float(np.mean(np.sum((D_s - target) ** 2, axis=1))),
                          float(np.sum(lam * _drift(A_s, b_s, M, c, tau, vs).var(axis=0))),
                          float(np.sum(D_s.var(axis=0)))]
            gain_scores.append(score)
        gain = _choose_gain(gain_scores)
    M, c = embedding(gain)
    ridge = _Ridge(M, c, z0, y, fold, v0, yv, lam, tau, backend=backend)
    reg, theta, scores = ridge.choose(path)
    A, b_z = theta[:, :N], theta[:, N]
    noise_info = None
    if weighted:
        # maximum likelihood: each increment weighted by its output's inverse noise variance,
        # modelled from the unweighted fit's residuals (_noise_weights)
        w, wv, noise_info = _noise_weights(ridge, z1 - z0 - _drift(A, b_z, M, c, tau, z0) * dt,
                                           v1 - v0 - _drift(A, b_z, M, c, tau, v0) * dt, dt)
        if w is not None:
            ridge = _Ridge(M, c, z0, y, fold, v0, yv, lam, tau, weights=(w, wv),
                           backend=backend)
            reg, theta, scores = ridge.choose(path)
            A, b_z = theta[:, :N], theta[:, N]
    if ito:
        # Itô–Taylor: E[Δz | z]/Δt = f + (Δt/2) L f + O(Δt²), L f = J f + ½ D : ∇∇f. The bias is
        # the network's own (analytic) L f̂ with D from the residuals; same Gram matrices, new
        # right-hand sides; two fixed-point passes (the second changes f̂ by O(Δt²))
        for _ in range(2):
            r_tr = z1 - z0 - _drift(A, b_z, M, c, tau, z0) * dt
            D_c = r_tr.T @ r_tr / (len(r_tr) * dt)
            yc = y - 0.5 * dt * _generator_of_drift(A, b_z, M, c, tau, z0, D_c)
            ycv = yv - 0.5 * dt * _generator_of_drift(A, b_z, M, c, tau, v0, D_c)
            ridge.set_targets(yc, ycv)
            reg, theta, scores = ridge.choose(path)
            A, b_z = theta[:, :N], theta[:, N]
    best = ridge.held_out(theta)
    if noise_info is not None and any(noise_info["weighted"]):
        say("  increments weighted by the inverse noise variance of output(s) "
            + ", ".join(str(a + 1) for a, u in enumerate(noise_info["weighted"]) if u)
            + " (maximum likelihood for state-dependent noise)")
    say(f"  increment matching: gain scale {gain:g}, ridge penalty per output "
        + ", ".join(f"{r:g}" for r in reg) + f" (held-out loss {best:.4g}, "
        f"{time.perf_counter() - t1:.1f}s)")
    stages = {"increments": {"reg": reg.tolist(), "gain": gain, "gain_path": gain_scores,
                             "ito_correction": bool(ito), "weighted": noise_info,
                             "held_out_loss": best,
                             "path": [[r, s.tolist()] for r, s in scores]}}

    # 2. adjoint refinement: RK4 flow map over Δt against the next observation
    if substeps:
        if ito:
            # the flow map is the conditional mean's deterministic part only: E[z(t+Δt) | z] =
            # Φ_Δt(z) + (Δt²/2) · ½ D : ∇∇f + O(Δt³). Fitting Φ to raw observations would fold
            # that diffusion term into f (measured on the bench double well at Δt = 0.1: e_f
            # 0.064 → 0.071); it is removed from the targets, with f̂ the increment-matching
            # network's and D the residuals', both held fixed, as in the Itô correction above
            z1t = z1 - 0.5 * dt * dt * _generator_of_drift(A, b_z, M, c, tau, z0, D_c, False)
            v1t = v1 - 0.5 * dt * dt * _generator_of_drift(A, b_z, M, c, tau, v0, D_c, False)
        else:
            z1t, v1t = z1, v1
        A, b_z, M, c, stages["refine"] = _refine(
            (A, b_z, M, c, tau), (z0, z1t), (v0, v1t), lam,
            Refinement(dt, int(substeps), float(np.min(reg)), refine_iter, refine_pairs),
            rng, progress)

    # 3. diffusion from the residuals of the final drift (the flow map when refined)
    net = Network(tau, M, c, M @ b_z + c, np.eye(d), np.zeros((d, d, N)), A=A)
    pred = (integrate(A, b_z, M, c, tau, z0, dt / substeps, substeps) if substeps
            else z0 + net.latent_drift(z0) * dt)
    r = z1 - pred
    D = r.T @ r / (len(r) * dt)
    try:
        S0 = np.linalg.cholesky(0.5 * (D + D.T))
    except np.linalg.LinAlgError:
        raise DDMError(f"{obs.source}: the residual diffusion is singular (some combination of "
                       "coordinates has no noise, or the data repeat values): the increments do "
                       "not determine a diffusion; check for duplicated or derived "
                       "coordinates") from None
    R = np.zeros((d, d, N))
    if state_noise:
        rv = v1 - (integrate(A, b_z, M, c, tau, v0, dt / substeps, substeps) if substeps
                   else v0 + net.latent_drift(v0) * dt)
        S0, R, stages["diffusion"] = _state_noise(net, z0, r, v0, rv, dt, progress)
    net = net.with_noise(S0, R)

    # figures of fit on held-out trials
    def predict(zs):
        if substeps:
            return integrate(net.A, net.b_z, net.M, net.c, tau, zs, dt / substeps, substeps)
        return zs + net.latent_drift(zs) * dt

    figures = {"e_increments": relative_error(predict(v0) - v0, v1 - v0)}
    system = _truth(obs, truth)
    if system is not None and system.d == d:
        # "the region the data visits": the held-out points inside the box of the central 99% of
        # the training data (0.5–99.5% quantiles per coordinate). Rare excursions beyond it are
        # where the data say least; e.g. for multiplicative noise the top 0.1% of |z| alone
        # doubles e_D, with D ∝ z² there.
        region = np.column_stack([np.quantile(z0, 0.005, axis=0), np.quantile(z0, 0.995, axis=0)])
        inside = np.all((v0 >= region[:, 0]) & (v0 <= region[:, 1]), axis=1)
        zr = v0[inside]
        f_true = np.asarray(system.drift(zr, None), dtype=float)
        g = np.asarray(system.diffusion(zr), dtype=float)
        figures["e_f"] = relative_error(net.latent_drift(zr), f_true)
        figures["e_D"] = relative_error(net.latent_diffusion(zr),
                                        np.einsum("kam,kbm->kab", g, g))
        # the floor: the truth's own Euler prediction of the same increments
        f_all = np.asarray(system.drift(v0, None), dtype=float)
        figures["e_increments_truth"] = relative_error(f_all * dt, v1 - v0)
        sysmeta = system.record()
    else:
        sim_dt = dt / max(1, math.ceil(dt / 0.01))
        sysmeta = {"name": "data", "kind": "data", "d": d, "m": d, "p": 0,
                   "domain": domain.tolist(), "dt": sim_dt,
                   "duration": float(obs.t[-1] - obs.t[0])}
    net.meta.update({
        "system": sysmeta,
        "data": {"source": obs.source, "trials": obs.trials, "T": int(obs.z.shape[1]),
                 "dt": dt, "train_trials": len(train), "held_out_trials": len(val),
                 "train_pairs": int(len(z0)), "held_out_pairs": int(len(v0)),
                 "domain": domain.tolist(),
                 "region_of_figures": "held-out points within the 0.5–99.5% quantile box"},
        "training": {"mode": "lowrank", "neurons": N, "seed": seed, "tau": tau,
                     "reg": reg.tolist(), "gain": gain,
                     "substeps": int(substeps), "state_noise": bool(state_noise),
                     "device": backend.NAME, "device_reason": device_reason,
                     "blas_threads": BLAS_THREADS,
                     "stages": stages, "seconds": time.perf_counter() - t_start,
                     "from_data": True},
        "fit": figures,
        "version": __version__,
    })
    say("figures of fit (held-out trials): "
        + ", ".join(f"{k} = {v:.3g}" for k, v in figures.items()))
    return net


def _multistep_held_out(A, b_z, M, c, tau, v0, v1, h, n, lam):
    """The multi-step loss without penalty on held-out pairs (forward map only)."""
    try:
        pred = integrate(A, b_z, M, c, tau, v0, h, n)
    except DDMError:
        return np.inf
    return float(np.mean(np.sum(lam * (pred - v1) ** 2, axis=1))) / (n * h) ** 2


class Refinement(NamedTuple):
    """The settings of _refine: the sampling interval, RK4 steps per interval, the ridge penalty
    (relative), the iteration budget, the training pairs per evaluation, and the early stopping
    (held-out loss after every ``chunk`` iterations, ``patience`` chunks without improvement)."""
    dt: float
    substeps: int
    reg: float
    max_iter: int
    n_pairs: int
    chunk: int = 20
    patience: int = 2


def _refine(drift, train, held_out, lam, settings, rng, progress):
    """L-BFGS-B on (A, b_z, M, c) for the multi-step loss (ddm_numba.learn.multistep), from the
    increment-matching solution drift = (A, b_z, M, c, τ), on the training pairs train = (z0, z1),
    early-stopped on the held-out pairs held_out = (v0, v1); settings: a Refinement.

    A random subset of n_pairs training pairs keeps each evaluation affordable. The optimizer runs
    in chunks of ``chunk`` iterations; after each, the held-out multi-step loss (the same loss on
    held-out trials' pairs, no penalty) is evaluated, and the best parameters so far are kept. It
    stops after ``patience`` chunks without improvement, at max_iter, or when L-BFGS-B converges.
    If no chunk lowers the held-out loss below the start's, the increment-matching solution is
    returned unchanged: refinement never makes the held-out loss worse.
    """
    A, b_z, M, c, tau = drift
    (z0, z1), (v0, v1) = train, held_out
    dt, substeps, reg, max_iter, n_pairs, chunk, patience = settings
    z0, z1 = (z0, z1) if len(z0) <= n_pairs else \
        tuple(a[np.sort(rng.choice(len(z0), n_pairs, replace=False))] for a in (z0, z1))
    sv = _subset(len(v0), max(n_pairs // 4, 1000), rng)
    v0, v1 = np.ascontiguousarray(v0[sv]), np.ascontiguousarray(v1[sv])
    N, d = M.shape
    z0, z1 = np.ascontiguousarray(z0), np.ascontiguousarray(z1)
    h = dt / substeps
    reg_A = reg * float(np.mean(lam)) / tau ** 2
    packer = Packer({"A": (d, N), "b_z": (d,), "M": (N, d), "c": (N,)})
    # L-BFGS-B is not scale invariant: each block in units where it is O(1)
    scale = lowrank_scale(packer, A, M)
    # the loss is Σ Λ (Δ − pred)²/Δt² ~ Λ (noise²/Δt), O(1/Δt): normalise by its start value
    loss0, _ = multistep_loss_grad(A, b_z, M, c, tau, z0, z1, h, substeps, lam, reg_A)
    norm = 1.0 / max(loss0, 1e-300)

    def objective(x):
        prm = packer.unpack(x * scale)
        try:
            loss, g = multistep_loss_grad(prm["A"], prm["b_z"], prm["M"], prm["c"], tau, z0, z1,
                                          h, substeps, lam, reg_A)
        except DDMError:      # the line search tried a step where RK4 diverges: reject it
            return np.inf, np.zeros_like(x)
        return loss * norm, packer.pack(g) * scale * norm

    x = packer.pack({"A": A, "b_z": b_z, "M": M, "c": c}) / scale
    start = _multistep_held_out(A, b_z, M, c, tau, v0, v1, h, substeps, lam)
    best = (start, x.copy(), 0)
    history, done, stale, t0 = [[0, start]], 0, 0, time.perf_counter()
    while done < max_iter and stale < patience:
        asked = min(chunk, max_iter - done)
        x, info = _minimize(objective, x, "adjoint", asked, 1e-12, progress)
        done += max(info["iterations"], 1)
        prm = packer.unpack(x * scale)
        score = _multistep_held_out(prm["A"], prm["b_z"], prm["M"], prm["c"], tau, v0, v1, h,
                                    substeps, lam)
        history.append([done, score])
        if score < best[0]:
            best, stale = (score, x.copy(), done), 0
        else:
            stale += 1
        if info["iterations"] < asked:
            break             # converged (or stuck) before the chunk's end
    # kept: the start itself, not its round trip through the scaled vector
    prm = ({"A": A, "b_z": b_z, "M": M, "c": c} if best[2] == 0 else
           packer.unpack(best[1] * scale))
    info = {"iterations": done, "substeps": substeps, "pairs": int(len(z0)),
            "held_out_pairs": int(len(v0)), "loss_start": float(loss0),
            "held_out_start": start, "held_out_best": best[0], "best_iteration": best[2],
            "kept_increment_matching": best[2] == 0, "held_out_history": history,
            "seconds": time.perf_counter() - t0}
    if progress is not None:
        print(f"  [adjoint] held-out multi-step loss {start:.4g} -> {best[0]:.4g} (best at "
              f"iteration {best[2]}" + (": increment matching kept" if best[2] == 0 else "")
              + ")", file=progress, flush=True)
    return prm["A"].copy(), prm["b_z"].copy(), prm["M"].copy(), prm["c"].copy(), info


def _jacobians(net, z):
    """The latent drift's Jacobians J_k = (1/τ)(−I + A diag(1 − φ²) M) at the rows of z, (K, d, d)."""
    J = np.empty((len(z), net.d, net.d))
    for sl in row_blocks(len(z), net.N):
        ph = np.tanh(z[sl] @ net.M.T + net.c)
        J[sl] = np.einsum("an,kn,nb->kab", net.A, 1.0 - ph * ph, net.M)
    return (J - np.eye(net.d)) / net.tau


def _features_times(M, c, z, coef):
    """ψ(z) coef for ψ = [φ(M z + c); 1] and coef (N + 1, q), in row blocks: (K, q)."""
    N = M.shape[0]
    out = np.empty((len(z), coef.shape[1]))
    for sl in row_blocks(len(z), N):
        out[sl] = np.tanh(z[sl] @ M.T + c) @ coef[:N] + coef[N]
    return out


def _smooth_diffusion(M, c, z, r, zv, rv, dt, G=None, Gv=None):
    """Step 1 of _state_noise: vec(r rᵀ/Δt) ridge-regressed on ψ = [φ(M z + c); 1], the penalty
    per entry chosen on the held-out residuals rv. G, Gv: the Gram matrices of z and zv if already
    at hand (they do not depend on the targets). Returns (coefficients (N + 1, d²), penalty per
    entry, the held-out mean squared error summed over the entries)."""
    N, d = M.shape
    MT, c = np.ascontiguousarray(M.T), np.ascontiguousarray(c)
    Dn = np.einsum("ka,kb->kab", r, r).reshape(len(r), d * d) / dt
    Dv = np.einsum("ka,kb->kab", rv, rv).reshape(len(rv), d * d) / dt
    if G is None:
        G, _, _ = cpu.gram_statistics(np.ascontiguousarray(z), np.zeros((len(z), 0)),
                                      np.zeros((len(z), 0)), MT, c)
        Gv, _, _ = cpu.gram_statistics(np.ascontiguousarray(zv), np.zeros((len(zv), 0)),
                                       np.zeros((len(zv), 0)), MT, c)
    C, Cv = _cross(M, c, z, Dn), _cross(M, c, zv, Dv)
    coef, chosen, err = _ridge_per_column(G, C, Gv, Cv, np.mean(Dv ** 2, axis=0))
    return coef, chosen, float(np.sum(err))


def _state_noise(net, z0, r, v0, rv, dt, progress, max_polish=30000, G=None, Gv=None,
                 polish_iter=300):
    """S0, R from the residuals r of the drift's prediction (state-dependent diffusion).

    The single-pair targets r rᵀ/Δt are very noisy (a χ² variable per pair), and fitting the
    quadratic model S Sᵀ to them directly is badly conditioned. So, as ``fit`` does with a known g:
      1. smooth: regress vec(r rᵀ/Δt) on the features ψ = [φ(M z + c); 1] over all training
         pairs (ridge from Gram statistics, the penalty per entry chosen on the held-out trials'
         residuals rv, scored by ridge_path_error) → D̂(z);
      2. bias: the residual of a pair is the noise carried by the flow over Δt, whose covariance
         is Σ = ∫₀^Δt e^{Js} D e^{Jᵀs} ds = D Δt + (J D + D Jᵀ) Δt²/2 + O(Δt³) (J the drift's
         Jacobian), so D = Σ/Δt − (J Σ/Δt + Σ/Δt Jᵀ) Δt/2 + O(Δt²): the network's Jacobian
         (analytic) corrects D̂ to first order; then D̂ is made positive definite by clipping its
         eigenvalues;
      3. factor and polish (on up to max_polish pairs): g_k = chol(D̂(z_k)) regressed on ψ gives a
         start (S0, R) linear in the features; L-BFGS-B on the diffusion loss of docs/model.md §4
         against D̂ (training.diffusion_objective).
    """
    d, N = net.d, net.N
    rng = np.random.default_rng(0)
    MT, c = np.ascontiguousarray(net.M.T), np.ascontiguousarray(net.c)
    zc, vc = np.ascontiguousarray(z0), np.ascontiguousarray(v0)
    K = len(zc)
    coef, chosen, _ = _smooth_diffusion(net.M, net.c, zc, r, vc, rv, dt, G, Gv)
    # 1.–2. smoothed, bias-corrected D̂ at the polish points
    sub = _subset(K, max_polish, rng)
    zs = np.ascontiguousarray(zc[sub])
    S_hat = _features_times(net.M, net.c, zs, coef).reshape(len(zs), d, d)
    S_hat = 0.5 * (S_hat + np.transpose(S_hat, (0, 2, 1)))
    J = _jacobians(net, zs)
    JS = J @ S_hat
    D_hat = S_hat - 0.5 * dt * (JS + np.transpose(JS, (0, 2, 1)))
    w, V = np.linalg.eigh(D_hat)
    w = np.maximum(w, 1e-6 * float(np.mean(np.trace(D_hat, axis1=1, axis2=2))) / d)
    D_hat = np.einsum("kab,kb,kcb->kac", V, w, V)
    # 3. start: g_k = chol(D̂_k), linear in the features; then polish
    g = np.linalg.cholesky(D_hat).reshape(len(zs), d * d)
    Gs, Cs, _ = cpu.gram_statistics(zs, np.zeros((len(zs), 0)), np.ascontiguousarray(g), MT, c)
    unit = np.r_[np.ones(N), 0.0] * np.trace(Gs) / len(Gs)     # as in _smooth_diffusion
    start_coef = ridge_solve(Gs, Cs, float(np.median(chosen)) * unit)
    start = {"S0": start_coef[N].reshape(d, d), "R": start_coef[:N].T.reshape(d, d, N)}
    packer = Packer({"S0": (d, d), "R": (d, d, N)})
    objective = diffusion_objective(packer, zs, D_hat, net.M, net.c, np.zeros((d, d)), 1e-8)
    x, info = _minimize(objective, packer.pack(start), "diffusion", polish_iter, 1e-12, progress)
    prm = packer.unpack(x)
    info.update({"method": "ridge-smoothed r rᵀ/Δt (penalty per entry on held-out), "
                           "first-order flow correction, Cholesky, ridge on g, then L-BFGS-B",
                 "reg_per_entry": chosen.tolist(), "pairs": K})
    return prm["S0"].copy(), prm["R"].copy(), info
