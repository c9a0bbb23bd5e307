"""Learning a network from observed trajectories, when no equations are known.

Observations z_k of an SDE dz = f dt + g dB at spacing Δt give, pair by pair (k, k+1),

    E[Δz | z] = f(z) Δt + O(Δt²),     E[(Δz − f Δt)(Δz − f Δt)ᵀ | z] = D(z) Δt + O(Δt²)

so the increments y_k = Δz_k / Δt are noisy but (to O(Δt)) unbiased targets for the drift, and the
residuals r_k r_kᵀ / Δt for D. Least squares over many pairs averages the noise away, with no
binning: the same losses as DESIGN.md §4 with y_k in place of f(z_k) ("increment matching").

1. increment matching: random embedding M, c over the box the data visits; decoders A, b_z by ridge
   regression on the increments (one O(K N²) pass for the Gram statistics), the penalty chosen on
   held-out trials from a path of values (the noise makes it matter);
2. adjoint refinement (coarse Δt): one-step Euler targets are biased by O(Δt) when Δt is not small
   against the dynamics. From each observed z(t_i) the network's latent drift is integrated with
   RK4 over Δt (``substeps`` steps of Δt/substeps) and compared with z(t_{i+1}) — the flow map
   standing in for the conditional mean — and (A, b_z, M, c) are refined by L-BFGS-B with the
   gradient of the discrete adjoint (ddm_numba.multistep);
3. diffusion: D = mean of r rᵀ / Δt over the residuals of the final drift (constant), or S0, R
   fitted to the noisy targets r rᵀ/Δt by the diffusion loss of DESIGN.md §4 (state-dependent).

Figures of fit on held-out trials: the predictive error of the increments (noise-dominated: it
cannot go below the noise floor, reported alongside when the truth is known) and, where the data
came from a known system, e_f and e_D against the truth at the held-out points (the region the data
visits).
"""
import math
import sys
import time

import numpy as np

from .. import __version__
from ..backends import cpu
from ..errors import DDMError, checked_number as _number
from ..matching import _tau, fit_memory, initial_embedding, relative_error
from ..network import Network
from ..resources import require
from ..systems import get_system, system_from_record
from ..training import (Packer, _minimize, diffusion_objective, lowrank_scale,
                        ridge_path_error, ridge_solve)
from .data import Observations, load_observations, _split
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


def _box(z):
    lo, hi = np.min(z, axis=0), np.max(z, axis=0)
    pad = 0.05 * np.maximum(hi - lo, 1e-6)
    return np.column_stack([lo - pad, hi + pad])


class _Ridge:
    """Ridge decoders on increments from Gram statistics, with the penalty chosen on held-out pairs.

    Features ψ = [φ(M z + c); 1], targets Y = τ y + z (so that τ f_net = Θ ψ − z, as in
    matching.ridge_decoders). Per output a, with weights Λ_a:
        train:    (G + τ² λ / Λ_a · I_A) θ_a = C_a
        held-out: E_v(θ) = Σ_a Λ_a [θ_aᵀ G_v θ_a − 2 θ_aᵀ C_v,a + mean(Y_v,a²)] / τ²
    which is Σ_a Λ_a mean((f_net − y)_a²) on the held-out pairs, computed without touching them
    again for each candidate λ.
    """

    def __init__(self, M, c, z, y, zv, yv, lam, tau):
        self.N, self.tau, self.lam = M.shape[0], tau, lam
        MT, c = np.ascontiguousarray(M.T), np.ascontiguousarray(c)
        Y = np.ascontiguousarray(tau * y + z)
        Yv = np.ascontiguousarray(tau * yv + zv)
        self.G, self.C, _ = cpu.gram_statistics(np.ascontiguousarray(z), np.zeros((len(z), 0)),
                                                Y, MT, c)
        self.Gv, self.Cv, _ = cpu.gram_statistics(np.ascontiguousarray(zv),
                                                  np.zeros((len(zv), 0)), Yv, MT, c)
        self.sv = np.mean(Yv ** 2, axis=0)

    def solve(self, reg):
        ridge = np.zeros(self.G.shape[0])
        ridge[:self.N] = 1.0
        reg_A = reg * float(np.mean(self.lam)) / self.tau ** 2
        penalty = np.array([ridge * self.tau ** 2 * reg_A / la for la in self.lam])
        return ridge_solve(self.G, self.C, penalty).T

    def held_out(self, theta):
        e = ridge_path_error(theta.T, self.Gv, self.Cv, self.sv)
        return float(np.dot(self.lam, e)) / self.tau ** 2


MAX_SUBSTEPS = 64   # RK4 steps per sampling interval: beyond this the flow map no longer changes


def fit_data(data, neurons=256, *, seed=0, tau=1.0, holdout=0.2, reg=None, substeps=0,
             refine_iter=100, refine_pairs=20000, state_noise=False, max_pairs=2000000,
             truth=None, progress=sys.stderr):
    """Fit a low-rank network to observed trajectories (increment matching + adjoint refinement).

    data: a trajectory file (``t``, ``z`` (trials, T, d)) or Trajectories. reg: ridge penalty
    (relative, as in ``fit``); None chooses it on held-out trials from 1e-10 … 1e-1. substeps: 0
    for increment matching alone, else the adjoint refinement with that many RK4 steps per
    sampling interval. truth: a system spec to score against (default: the one named in the
    file's metadata, if any; False for none). Returns the Network; ``meta["fit"]`` holds the
    held-out figures.
    """
    t_start = time.perf_counter()

    def say(msg):
        if progress is not None:
            print(msg, file=progress, flush=True)

    N = _number(neurons, "neurons", 1, integer=True)
    tau = _tau(tau)
    seed = _number(seed, "seed", 0, 2**63 - 1, integer=True)
    if reg is not None:
        reg = _number(reg, "reg", 0)
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
    z0, z1 = split.pairs(train)
    v0, v1 = split.pairs(val)
    if len(z0) < 10 * N or len(v0) < 10:
        raise DDMError(f"{obs.source}: {len(z0)} training / {len(v0)} held-out increments are "
                       f"too few for {N} neurons (want at least 10 per neuron); record longer or "
                       "use fewer --neurons")
    rng = np.random.default_rng(seed)
    if len(z0) > max_pairs:           # the Gram pass is O(K N²): a random subset is plenty
        keep = rng.choice(len(z0), max_pairs, replace=False)
        z0, z1 = z0[keep], z1[keep]
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

    # 1. increment matching: ridge path on the increments, penalty chosen on held-out trials
    M, c = initial_embedding(domain, N, rng)
    ridge = _Ridge(M, c, z0, y, v0, yv, lam, tau)
    path = [reg] if reg is not None else [10.0 ** k for k in range(-10, 0)]
    scores = [(ridge.held_out(ridge.solve(r)), r) for r in path]
    best, reg = min(scores)
    theta = ridge.solve(reg)
    A, b_z = theta[:, :N], theta[:, N]
    say(f"  increment matching: ridge penalty {reg:g} (held-out loss {best:.4g})")
    stages = {"increments": {"reg": reg, "path": [[r, s] for s, r in scores]}}

    # 2. adjoint refinement: RK4 flow map over Δt against the next observation
    if substeps:
        A, b_z, M, c, stages["refine"] = _refine(A, b_z, M, c, tau, z0, z1, dt, int(substeps),
                                                 lam, reg, refine_iter, refine_pairs, rng,
                                                 progress)

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
        # its own small penalty: the drift's (chosen for the drift's noise) can be far too strong
        S0, R, stages["diffusion"] = _state_noise(net, z0, r, dt, S0, 1e-8, progress)
    net.S0, net.R = S0, R

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
        "training": {"mode": "lowrank", "neurons": N, "seed": seed, "tau": tau, "reg": reg,
                     "substeps": int(substeps), "state_noise": bool(state_noise),
                     "stages": stages, "seconds": time.perf_counter() - t_start,
                     "from_data": True},
        "fit": figures,
        "version": __version__,
    })
    say("figures of fit (held-out trials): "
        + ", ".join(f"{k} = {v:.3g}" for k, v in figures.items()))
    return net


def _refine(A, b_z, M, c, tau, z0, z1, dt, substeps, lam, reg, max_iter, n_pairs, rng,
            progress):
    """L-BFGS-B on (A, b_z, M, c) for the multi-step loss (ddm_numba.multistep), from the
    increment-matching solution; a random subset of n_pairs pairs keeps each evaluation cheap."""
    if len(z0) > n_pairs:
        keep = rng.choice(len(z0), n_pairs, replace=False)
        z0, z1 = z0[keep], z1[keep]
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

    x0 = packer.pack({"A": A, "b_z": b_z, "M": M, "c": c}) / scale
    x, info = _minimize(objective, x0, "adjoint", max_iter, 1e-12, progress)
    prm = packer.unpack(x * scale)
    info.update({"substeps": substeps, "pairs": int(len(z0)), "loss_start": float(loss0)})
    return prm["A"], prm["b_z"], prm["M"], prm["c"], info


def _state_noise(net, z0, r, dt, S0, reg, progress, max_samples=100000):
    """S0, R from the residuals r (state-dependent diffusion), in three least-squares steps.

    The single-pair targets r rᵀ/Δt are very noisy (a χ² variable per pair), and fitting the
    quadratic model S Sᵀ to them directly is badly conditioned. So, as ``fit`` does with a known g:
      1. smooth: regress vec(r rᵀ/Δt) on the features ψ = [φ(M z + c); 1] (ridge; least squares
         averages the noise) → D̂(z), made positive definite by clipping its eigenvalues;
      2. factor: g_k = chol(D̂(z_k)) and regress g on ψ → a start (S0, R) linear in the features;
      3. polish: L-BFGS-B on the diffusion loss of DESIGN.md §4 against D̂ (ddm_numba.matching).
    """
    d, N = net.d, net.N
    rng = np.random.default_rng(0)
    if len(z0) > max_samples:
        keep = rng.choice(len(z0), max_samples, replace=False)
        z0, r = z0[keep], r[keep]
    K = len(z0)
    zc = np.ascontiguousarray(z0)
    MT, c = np.ascontiguousarray(net.M.T), np.ascontiguousarray(net.c)
    psi = np.column_stack([np.tanh(zc @ net.M.T + net.c), np.ones(K)])

    def ridge_fit(Y):
        G, C, _ = cpu.gram_statistics(zc, np.zeros((K, 0)), np.ascontiguousarray(Y), MT, c)
        return ridge_solve(G, C, np.full(N + 1, 1e-8 * np.trace(G) / len(G)))  # (N + 1, outputs)

    # 1. smoothed D̂(z_k)
    Dn = np.einsum("ka,kb->kab", r, r) / dt
    D_hat = (psi @ ridge_fit(Dn.reshape(K, d * d))).reshape(K, d, d)
    D_hat = 0.5 * (D_hat + np.transpose(D_hat, (0, 2, 1)))
    w, V = np.linalg.eigh(D_hat)
    w = np.maximum(w, 1e-6 * float(np.mean(np.trace(Dn, axis1=1, axis2=2))) / d)
    D_hat = np.einsum("kab,kb,kcb->kac", V, w, V)
    # 2. start: g_k = chol(D̂_k), linear in the features
    g = np.linalg.cholesky(D_hat)
    coef = ridge_fit(g.reshape(K, d * d))
    start = {"S0": coef[N].reshape(d, d), "R": coef[:N].T.reshape(d, d, N)}
    # 3. polish on the smoothed targets
    packer = Packer({"S0": (d, d), "R": (d, d, N)})
    objective = diffusion_objective(packer, zc, D_hat, net.M, net.c, np.zeros((d, d)), reg)
    x, info = _minimize(objective, packer.pack(start), "diffusion", 300, 1e-12, progress)
    prm = packer.unpack(x)
    info["method"] = "smoothed r rᵀ/Δt, Cholesky, ridge on g, then L-BFGS-B"
    return prm["S0"].copy(), prm["R"].copy(), info
