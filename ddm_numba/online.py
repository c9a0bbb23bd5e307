"""A local learning rule: the decoders learned online, while the network is driven by the target
(`ddm fit SYSTEM --online`, docs/learning.md §online).

The batch fits optimize over a whole sample of states at once (and the embedding with it, by
back-propagating through φ). A circuit would have to learn as it goes, each synapse from what it
can see. Here:

1. **Teacher forcing.** The target SDE runs (``trials`` paths in parallel, Euler–Maruyama at dt,
   started from states the target visits) and its latent state is fed back into the network:
   every neuron sits at h = M z + c, so its rate φ(h) is the presynaptic signal. M and c are
   the fixed random embedding (matching.initial_embedding); only the decoders learn.
2. **A rule on the drift error.** The network's latent drift is f̂ = (1/τ)(A φ + b_z − z)
   (docs/model.md §3, P c absorbed in b_z); what it should be is the target's f(z), given by the
   teacher. The postsynaptic error is e = τ f(z) + z − (A φ + b_z), in latent coordinates (the
   error each latent read-out sees). Two rules (``rule=``):

   - ``"rls"`` (default): recursive least squares, the rule of FORCE learning (Sussillo & Abbott
     2009). Each decoder weight changes by the error times a presynaptic trace k = P u/(1 + uᵀPu),
     u = [φ; 1], where P is the running inverse of the presynaptic rates' correlation (one N×N
     matrix shared by the d read-outs). After n states the decoders are exactly the ridge
     solution over those states (_rls's docstring), so e_f reaches the batch fit's of the same
     embedding in one pass, whatever the features' conditioning. Cost O(N²) per state.
   - ``"delta"``: the normalized delta rule, strictly synapse-local (presynaptic rate × error):
         ΔA_aj = η e_a φ_j / (‖φ‖² + 1),   Δb_a = η e_a / (‖φ‖² + 1),
     the normalized least-mean-squares (LMS / PES-like) step of stochastic gradient descent on
     ½ |e|² for one state (stable for η < 2). Its fixed point is the same least-squares decoder,
     but it moves along a direction of the features' covariance at a rate ∝ that direction's
     eigenvalue, and tanh features of a few latent coordinates are nearly collinear: e_f falls
     slowly (docs/learning.md §6 has the measurements). η decays as η₀ / (1 + t/t_q) in the last
     quarter of learning (stochastic approximation). Cost O(N) per state.
3. **The diffusion from residual second moments.** The teacher's increments minus the drift,
   r = Δz − f dt, have E[r rᵀ] = D dt: a running average gives D̂, and S0 = D̂^{1/2} (constant
   diffusion; a state-dependent one is for the batch fit).

Every step is local in time and uses only φ (and, for RLS, P), e and the increments: no stored
sample, no gradient through φ.
"""
import math
import sys
import time

import numpy as np

from ._jit import kernel, phi
from ._version import __version__
from .errors import DDMError, checked_number as _number


@kernel(fastmath={"nsz", "arcp", "contract", "reassoc"})
def _lms(z, y, M, c, A, b, eta, ph):
    """The rule over the states z (n, d) in order, targets y = τ f(z) + z: A, b in place.
    Returns Σ |e|² before each update (the online loss, for the record)."""
    n, d = z.shape
    N = M.shape[0]
    total = 0.0
    e = np.empty(d)
    for k in range(n):
        norm = 1.0
        for i in range(N):
            h = c[i]
            for a in range(d):
                h += M[i, a] * z[k, a]
            v = phi(h)
            ph[i] = v
            norm += v * v
        for a in range(d):
            s = b[a]
            for i in range(N):
                s += A[a, i] * ph[i]
            e[a] = y[k, a] - s
            total += e[a] * e[a]
        step = eta / norm
        for a in range(d):
            g = step * e[a]
            b[a] += g
            for i in range(N):
                A[a, i] += g * ph[i]
    return total


@kernel(fastmath={"nsz", "arcp", "contract", "reassoc"})
def _rls(z, y, M, c, W, S, buf):
    """Recursive least squares over the states z (n, d) in order, targets y: W = [A | b] (d, N+1)
    and S (N+1, N+1) in place, P = S Sᵀ. Returns Σ |e|² before each update.

    With u = [φ(M z + c); 1] the presynaptic rates and a constant, P the inverse of the
    presynaptic correlation Σ u uᵀ + α I seen so far (P₀ = I/α), each state does
        k = P u,   β = 1 + uᵀ P u,   e = y − W u,   W += e kᵀ / β,   P −= k kᵀ / β.
    The last line is the Sherman–Morrison update of (Σ u uᵀ + α I)⁻¹ by one more u uᵀ, so after
    n states W is exactly the ridge solution argmin Σ_k |y_k − W u_k|² + α ‖W‖²: the batch
    least-squares decoder over the visited states, reached in one pass whatever the conditioning
    of the features (the delta rule's W moves along a weak direction λ at a rate ∝ λ; here every
    direction is whitened by P). It is FORCE's rule (Sussillo & Abbott 2009).

    P is carried as its square root S (Potter's form): with f = Sᵀ u, k = S f, β = 1 + |f|²,
        S ← S − γ k fᵀ,   γ = 1 / (β + √β),
    since (I − γ f fᵀ)² = I − f fᵀ / β for that γ, so S Sᵀ takes exactly the update above. P = S Sᵀ
    cannot lose its positive definiteness to rounding, as P itself did: its rank-one downdates
    cancel entries of size 1/α, and with teachers started at visited states (few directions
    excited at first) most states gave uᵀPu < 0 and were skipped (measured: 3.8·10⁶ of 5.1·10⁶
    states, double_well at 64 neurons, 512 paths × 100 time units). Cost 3 (N+1)² multiply-adds
    a state against 2 for P."""
    n, d = z.shape
    N = M.shape[0]
    L = N + 1
    total = 0.0
    e = np.empty(d)
    u, f, k = buf[:L], buf[L:2 * L], buf[2 * L:3 * L]
    for s_ in range(n):
        for i in range(N):
            h = c[i]
            for a in range(d):
                h += M[i, a] * z[s_, a]
            u[i] = phi(h)
        u[N] = 1.0
        for j in range(L):
            f[j] = 0.0
        for i in range(L):          # f = Sᵀ u, row by row (unit stride)
            ui = u[i]
            row = S[i]
            for j in range(L):
                f[j] += ui * row[j]
        beta = 1.0
        for j in range(L):
            beta += f[j] * f[j]
        for i in range(L):          # k = S f = P u
            row = S[i]
            t = 0.0
            for j in range(L):
                t += row[j] * f[j]
            k[i] = t
        for a in range(d):
            t = 0.0
            for j in range(L):
                t += W[a, j] * u[j]
            e[a] = y[s_, a] - t
            total += e[a] * e[a]
        inv = 1.0 / beta
        for a in range(d):
            g = e[a] * inv
            for j in range(L):
                W[a, j] += g * k[j]
        gamma = 1.0 / (beta + np.sqrt(beta))
        for i in range(L):
            gk = gamma * k[i]
            row = S[i]
            for j in range(L):
                row[j] -= gk * f[j]
    return total


RECORDS = 20      # points of the learning curve (and chunks of the teacher's run)
_RULES = {"rls": "recursive least squares (FORCE) on the drift error, teacher forcing",
          "delta": "normalized delta rule on the drift error, teacher forcing"}


def fit_online(system, neurons=128, *, seed=0, tau=1.0, time_total=300.0, dt=None, trials=512,
               rule="rls", eta=0.5, ridge=1e-8, progress=sys.stderr):
    """Learn a network's decoders online under teacher forcing (module docstring). Returns the
    Network; meta["online"] holds the learning curve: simulated time, wall time and e_f on
    held-out states of the target's own runs, RECORDS times.

    time_total: simulated time of each of the ``trials`` teacher paths; dt: the target's step
    (default its suggested dt); rule: "rls" (recursive least squares, FORCE's rule: each weight's
    change is the postsynaptic error times a presynaptic trace P u) or "delta" (the normalized
    delta rule, strictly synapse-local); eta: η₀ of the delta rule; ridge: α, P₀ = I/α, of the
    RLS rule."""
    from .matching import figures_of_fit, initial_embedding, training_measure
    from .network import Network
    from .systems import evaluate, get_system
    system = get_system(system)
    if system.p:
        raise DDMError(f"the online rule learns systems without inputs; {system.name} has "
                       f"{system.p} (use the batch fit)")
    if not system.constant_diffusion:
        raise DDMError(f"the online rule learns a constant diffusion; {system.name}'s depends on "
                       "the state (use the batch fit)")
    N = _number(neurons, "neurons", system.d, integer=True)
    tau = _number(tau, "tau", 0, low_open=True)
    time_total = _number(time_total, "time_total", 0, low_open=True)
    trials = _number(trials, "trials", 1, 100000, integer=True)
    eta = _number(eta, "eta", 0, 2, low_open=True)
    ridge = _number(ridge, "ridge", 0, low_open=True)
    if rule not in ("rls", "delta"):
        raise DDMError(f"unknown online rule {rule!r}: use 'rls' or 'delta'")
    dt = float(dt or system.dt)
    d, m = system.d, system.m
    rng = np.random.default_rng(seed)
    say = (lambda msg: print(msg, file=progress, flush=True)) if progress else (lambda msg: None)
    t_start = time.perf_counter()
    M, c = initial_embedding(system.domain, N, rng)
    # K ≥ trials states, 70 % of them visited by target runs: the teachers' starts (below)
    measure = training_measure(system, max(64, trials), 2048, 0.7, 16, rng, lambda msg: None)
    z_test, f_test = measure["z_test"], evaluate(system, measure["z_test"])[0]
    g_test = evaluate(system, z_test)[1]
    A, b = np.zeros((d, N)), np.zeros(d)
    if rule == "rls":   # W = [A | b] and the (N+1)² square root S of P (the delta rule: neither)
        W, S, buf = np.zeros((d, N + 1)), np.eye(N + 1) / math.sqrt(ridge), np.empty(3 * (N + 1))
    else:
        ph = np.empty(N)
    lo, hi = system.domain[:, 0], system.domain[:, 1]
    # The teachers start from states the target visits (the training measure's, from runs apart
    # from the held-out ones), not uniformly in the box: the way in from a box corner is a
    # transient, and least squares over it spends the decoders on states the dynamics leaves
    # (measured, 64 paths: ou2d at 64 neurons e_f 2.1e-5 from box starts against 9.3e-6, lorenz
    # at 128 neurons 8.3e-4 against 4.7e-5; docs/learning.md §6). Without visited states (every
    # target run escaped the box) they start in the box.
    z_vis = measure["z"][len(measure["z"]) - measure["n_visited"]:]

    def starts(n):
        if len(z_vis):
            return z_vis[rng.integers(len(z_vis), size=n)].copy()
        return lo + (hi - lo) * rng.random((n, d))

    z = starts(trials)
    n_steps = int(math.ceil(time_total / dt))
    chunk = max(1, n_steps // RECORDS)
    half = n_steps * 3 // 4
    D_sum, D_count = np.zeros((d, d)), 0
    curve = {"time": [], "seconds": [], "e_f": []}
    sqdt = math.sqrt(dt)
    done = 0
    while done < n_steps:
        n = min(chunk, n_steps - done)
        Z, Y = np.empty((n, trials, d)), np.empty((n, trials, d))
        for k in range(n):
            f, g = evaluate(system, z)
            Z[k], Y[k] = z, tau * f + z
            xi = rng.standard_normal((trials, m))
            noise = sqdt * np.einsum("kam,km->ka", g, xi)
            D_sum += noise.T @ noise / dt
            D_count += trials
            z = z + f * dt + noise
            # a path that leaves the box far behind starts again (an escape is not a state the
            # network has to learn, and it would stall the rule on huge errors)
            out = np.any((z < lo - (hi - lo)) | (z > hi + (hi - lo)), axis=1)
            if out.any():
                z[out] = starts(int(out.sum()))
        if rule == "rls":
            _rls(Z.reshape(-1, d), Y.reshape(-1, d), M, c, W, S, buf)
            A, b = W[:, :N].copy(), W[:, N].copy()
        else:
            # η₀ for three quarters of the run, then η₀ / (1 + t / t_q)
            t_mid = max(done + n / 2 - half, 0) * dt
            rate = eta / (1.0 + t_mid / max(half * dt, 1e-12))
            _lms(Z.reshape(-1, d), Y.reshape(-1, d), M, c, A, b, rate, ph)
        done += n
        if not np.all(np.isfinite(A)):
            raise DDMError("the online rule diverged; " + (
                "lower eta" if rule == "delta" else "raise ridge"))
        net = Network(tau, M, c, M @ b + c, np.zeros((d, m)), np.zeros((d, m, N)), 0.0, A=A)
        e_f = float(figures_of_fit(system, net, z_test, None, f_test, g_test)["e_f"])
        curve["time"].append(done * dt)
        curve["seconds"].append(time.perf_counter() - t_start)
        curve["e_f"].append(e_f)
        say(f"  online: t = {done * dt:g} of {n_steps * dt:g} ({trials} teacher paths), "
            f"e_f {e_f:.3g}, {curve['seconds'][-1]:.1f}s")
    D_hat = D_sum / D_count
    w, V = np.linalg.eigh(D_hat)
    root = V @ np.diag(np.sqrt(np.clip(w, 0, None))) @ V.T
    S0 = np.zeros((d, m))
    S0[:, : min(d, m)] = root[:, : min(d, m)]
    net = Network(tau, M, c, M @ b + c, S0, np.zeros((d, m, N)), 0.0, A=A.copy())
    figures = figures_of_fit(system, net, z_test, None, f_test, g_test)
    net.meta.update({
        "system": system.record(),
        "training": {"mode": "lowrank", "neurons": N, "seed": seed, "tau": tau,
                     "method": "online", "seconds": time.perf_counter() - t_start},
        "online": {"rule": rule, "description": _RULES[rule], "trials": trials, "dt": dt,
                   "starts": "visited states" if len(z_vis) else "box",
                   "time": n_steps * dt, "eta": eta if rule == "delta" else None,
                   "ridge": ridge if rule == "rls" else None,
                   "curve": curve, "D_hat": D_hat.tolist()},
        "fit": figures,
    })
    net.meta["version"] = __version__
    say(f"online rule: e_f {figures['e_f']:.3g}, e_D {figures['e_D']:.3g} after "
        f"{n_steps * dt:g} time units × {trials} paths in {curve['seconds'][-1]:.1f}s")
    return net
