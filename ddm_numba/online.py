"""A local learning rule: the decoders learned online, while the network is driven by the target
(`ddm fit SYSTEM --online`, docs/learning.md §online).

The batch fits optimize over a whole sample of states at once (and the embedding with it, by
back-propagating through φ). A circuit would have to learn as it goes, each synapse from what it
can see. Here:

1. **Teacher forcing.** The target SDE runs (``trials`` paths in parallel, Euler–Maruyama at dt)
   and its latent state is fed back into the network: every neuron sits at h = M z + c, so its
   rate φ(h) is the presynaptic signal. M and c are the fixed random embedding
   (matching.initial_embedding); only the decoders learn.
2. **A delta rule on the drift error.** The network's latent drift is f̂ = (1/τ)(A φ + b_z − z)
   (docs/model.md §3, P c absorbed in b_z); what it should be is the target's f(z), given by the
   teacher. The postsynaptic error is e = τ f(z) + z − (A φ + b_z), in latent coordinates (the
   error each latent read-out sees), and each decoder weight changes by its presynaptic rate
   times that error,
       ΔA_aj = η e_a φ_j / (‖φ‖² + 1),   Δb_a = η e_a / (‖φ‖² + 1),
   the normalized least-mean-squares (LMS / PES-like) rule: the step of stochastic gradient
   descent on ½ |e|² for this one state, scaled by the presynaptic activity (stable for η < 2).
   Its fixed point is the least-squares decoder over the states the teacher visits — the batch
   ridge solution of a fixed-embedding fit, without the ridge — so e_f converges to that fit's.
   η decays as η₀ / (1 + t/t_q) in the last quarter of learning (stochastic approximation: the
   state-to-state scatter of the updates averages out).
3. **The diffusion from residual second moments.** The teacher's increments minus the drift,
   r = Δz − f dt, have E[r rᵀ] = D dt: a running average gives D̂, and S0 = D̂^{1/2} (constant
   diffusion; a state-dependent one is for the batch fit).

Every step is local in time and uses only φ, e and the increments: no stored sample, no
gradient through φ.
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


def fit_online(system, neurons=128, *, seed=0, tau=1.0, time_total=300.0, dt=None, trials=512,
               eta=0.5, record=20, progress=sys.stderr):
    """Learn a network's decoders online with the delta rule under teacher forcing (module
    docstring). Returns the Network; meta["online"] holds the learning curve: simulated time,
    wall time and e_f on held-out states of the target's own runs, ``record`` times.

    time_total: simulated time of each of the ``trials`` teacher paths; dt: the target's step
    (default its suggested dt); eta: η₀ of the normalized rule."""
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
    dt = float(dt or system.dt)
    d, m = system.d, system.m
    rng = np.random.default_rng(seed)
    say = (lambda msg: print(msg, file=progress, flush=True)) if progress else (lambda msg: None)
    t_start = time.perf_counter()
    M, c = initial_embedding(system.domain, N, rng)
    measure = training_measure(system, 64, 2048, 0.7, 16, rng, lambda msg: None)
    z_test, f_test = measure["z_test"], evaluate(system, measure["z_test"])[0]
    g_test = evaluate(system, z_test)[1]
    A, b = np.zeros((d, N)), np.zeros(d)
    ph = np.empty(N)
    lo, hi = system.domain[:, 0], system.domain[:, 1]
    z = lo + (hi - lo) * rng.random((trials, d))
    n_steps = int(math.ceil(time_total / dt))
    chunk = max(1, n_steps // record)
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
            # a path that leaves the box far behind restarts inside it (an escape is not a state
            # the network has to learn, and it would stall the rule on huge errors)
            out = np.any((z < lo - (hi - lo)) | (z > hi + (hi - lo)), axis=1)
            if out.any():
                z[out] = lo + (hi - lo) * rng.random((int(out.sum()), d))
        # η₀ for three quarters of the run, then η₀ / (1 + t / t_q)
        t_mid = max(done + n / 2 - half, 0) * dt
        rate = eta / (1.0 + t_mid / max(half * dt, 1e-12))
        _lms(Z.reshape(-1, d), Y.reshape(-1, d), M, c, A, b, rate, ph)
        done += n
        if not np.all(np.isfinite(A)):
            raise DDMError("the online rule diverged; lower eta")
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
        "online": {"rule": "normalized delta rule on the drift error, teacher forcing",
                   "trials": trials, "dt": dt, "time": n_steps * dt, "eta": eta,
                   "curve": curve, "D_hat": D_hat.tolist()},
        "fit": figures,
    })
    net.meta["version"] = __version__
    say(f"online rule: e_f {figures['e_f']:.3g}, e_D {figures['e_D']:.3g} after "
        f"{n_steps * dt:g} time units × {trials} paths in {curve['seconds'][-1]:.1f}s")
    return net
