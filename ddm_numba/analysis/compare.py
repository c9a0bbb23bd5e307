"""Network against target: distances between stationary laws, correlation functions, well hopping.

Each function takes latent samples or trajectories of shape (trials, T, d) (or (K, d) samples) and is
used on the network and on its target alike; a distance is reported with its Monte Carlo floor
(the same distance between two independent halves of the reference sample), so that a reader can
tell "different" from "finite sample".
"""
import numpy as np
from scipy.spatial.distance import cdist

from ..errors import DDMError


def _samples(x, name):
    x = np.asarray(x, dtype=float)
    x = x.reshape(-1, x.shape[-1])
    if x.shape[0] < 4 or not np.all(np.isfinite(x)):
        raise DDMError(f"{name}: need at least 4 finite samples, got {x.shape[0]}")
    return x


def _subsample(x, n, rng):
    return x if x.shape[0] <= n else x[rng.choice(x.shape[0], n, replace=False)]


def sliced_wasserstein(x, y, projections=128, seed=0, n=20000):
    """Sliced 1-Wasserstein distance: the mean over random unit directions θ of W1(θᵀX, θᵀY).

    Each 1-D W1 is ∫ |F_X⁻¹(q) − F_Y⁻¹(q)| dq, evaluated on a common grid of quantiles. Directions
    and subsamples (at most n points per side) come from a fixed seed.
    """
    x, y = _samples(x, "sliced_wasserstein x"), _samples(y, "sliced_wasserstein y")
    rng = np.random.default_rng(seed)
    x, y = _subsample(x, n, rng), _subsample(y, n, rng)
    theta = rng.standard_normal((projections, x.shape[1]))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    q = (np.arange(512) + 0.5) / 512
    px = np.quantile(x @ theta.T, q, axis=0)
    py = np.quantile(y @ theta.T, q, axis=0)
    return float(np.mean(np.abs(px - py)))


def energy_distance(x, y, n=2000, seed=0):
    """Energy distance 2E|X−Y| − E|X−X'| − E|Y−Y'| (Székely): 0 iff the laws agree.

    Computed on at most n points per side drawn with a fixed seed (O(n²) pairs). The within-sample
    terms exclude the diagonal (unbiased), so for equal laws the estimate scatters around 0 and can
    be slightly negative; it is not clipped.
    """
    x, y = _samples(x, "energy_distance x"), _samples(y, "energy_distance y")
    rng = np.random.default_rng(seed)
    x, y = _subsample(x, n, rng), _subsample(y, n, rng)
    xy = cdist(x, y).mean()
    xx = cdist(x, x).sum() / (x.shape[0] * (x.shape[0] - 1))
    yy = cdist(y, y).sum() / (y.shape[0] * (y.shape[0] - 1))
    return float(2 * xy - xx - yy)


def distribution_distances(z_net, z_target, seed=0):
    """Sliced W1 and energy distance network vs target, with the floor from two target halves.

    z_*: stationary trajectories (trials, T, d). The floor splits the target's trials in two
    independent halves: the distance that sampling error alone gives between independent samples
    (at half the sample size). When network and target were sampled with the same seeds (common
    random numbers: the same noise drives both), their distance is mostly free of that sampling
    error and can be well below the floor; it then measures the systematic difference.
    """
    z_target = np.asarray(z_target, dtype=float)
    half = z_target.shape[0] // 2
    out = {"sliced_w1": sliced_wasserstein(z_net, z_target, seed=seed),
           "energy": energy_distance(z_net, z_target, seed=seed)}
    if half >= 2:
        a, b = z_target[:half], z_target[half:2 * half]
        out["sliced_w1_floor"] = sliced_wasserstein(a, b, seed=seed)
        out["energy_floor"] = energy_distance(a, b, seed=seed)
    return out


def moments(z):
    """Per-coordinate mean and standard deviation of stationary samples (trials, T, d)."""
    x = _samples(z, "moments")
    return {"mean": x.mean(axis=0), "std": x.std(axis=0, ddof=1)}


def autocorrelation(z, max_lag):
    """Normalized autocorrelation per coordinate, ρ_a(k) = E[δz_a(t+k) δz_a(t)] / Var z_a.

    z: (trials, T, d) recorded at equal spacing; lags 0..max_lag in samples, averaged over trials
    and times (the mean is removed over everything, so stationarity is assumed).
    """
    z = np.asarray(z, dtype=float)
    if z.ndim != 3:
        raise DDMError(f"autocorrelation needs trajectories (trials, T, d), got shape {z.shape}")
    T = z.shape[1]
    max_lag = int(min(max_lag, T - 2))
    dz = z - z.reshape(-1, z.shape[2]).mean(axis=0)
    var = np.mean(dz ** 2, axis=(0, 1))
    acf = np.empty((max_lag + 1, z.shape[2]))
    for k in range(max_lag + 1):
        acf[k] = np.mean(dz[:, k:] * dz[:, :T - k], axis=(0, 1)) / var
    return acf


def cross_correlation_asymmetry(z, max_lag):
    """C₁₂(k) − C₂₁(k) for the first two coordinates, C_ab(k) = E[δz_a(t+k) δz_b(t)] / (s_a s_b).

    Zero at every lag for a time-reversible process (time reversal maps C(k) to C(k)ᵀ); its sign
    tells the sense of rotation of the stationary current (docs/irreversibility.md §4.2).
    """
    z = np.asarray(z, dtype=float)
    if z.ndim != 3 or z.shape[2] < 2:
        raise DDMError("cross-correlation asymmetry needs trajectories with d ≥ 2")
    T = z.shape[1]
    max_lag = int(min(max_lag, T - 2))
    dz = z[..., :2] - z[..., :2].reshape(-1, 2).mean(axis=0)
    s = np.sqrt(np.mean(dz ** 2, axis=(0, 1)))
    out = np.empty(max_lag + 1)
    for k in range(max_lag + 1):
        c12 = np.mean(dz[:, k:, 0] * dz[:, :T - k, 1])
        c21 = np.mean(dz[:, k:, 1] * dz[:, :T - k, 0])
        out[k] = (c12 - c21) / (s[0] * s[1])
    return out


def core_sequence(z, wells, radius):
    """For each trial, the index of the last well (core ball of the given radius) visited at each
    record (−1 before the first visit). Milestoning: a trajectory belongs to a well from the time it
    enters that well's core until it enters another's, which ignores the re-crossings of a boundary
    that would inflate transition counts.
    """
    z = np.asarray(z, dtype=float)
    wells = np.asarray(wells, dtype=float).reshape(-1, z.shape[-1])
    dist = np.linalg.norm(z[:, :, None, :] - wells[None, None], axis=-1)   # (trials, T, n)
    inside = dist < radius
    core = np.where(inside.any(axis=2), np.argmin(dist, axis=2), -1)
    last = np.empty_like(core)
    for tr in range(z.shape[0]):
        current = -1
        for k in range(z.shape[1]):
            if core[tr, k] >= 0:
                current = core[tr, k]
            last[tr, k] = current
    return last


def well_transitions(z, wells, radius, dt):
    """Hops between wells (memories): counts, rates, dwell times, first-passage times.

    Returns the transition count matrix C[i, j] (entries of core j straight after being assigned to
    i), the rate of hops per unit time, the mean dwell time in each well (from entering its core to
    entering another's; only complete dwells count) and the mean first-passage time from well i to
    well j (from entering core i to the first subsequent entry of core j, over complete passages).
    """
    seq = core_sequence(z, wells, radius)
    n = len(np.asarray(wells).reshape(-1, np.shape(z)[-1]))
    counts = np.zeros((n, n), dtype=int)
    dwell = [[] for _ in range(n)]
    fpt = [[[] for _ in range(n)] for _ in range(n)]
    for row in seq:
        # once assigned, a trial never returns to −1, so every change enters a well's core
        entries = [(int(k), int(row[k])) for k in np.flatnonzero(np.diff(row)) + 1]
        known = [True] * len(entries)
        if row[0] >= 0:                 # started inside: the entry time of that dwell is unknown
            entries.insert(0, (0, int(row[0])))
            known.insert(0, False)
        for a in range(len(entries) - 1):
            (k0, i), (k1, j) = entries[a], entries[a + 1]
            counts[i, j] += 1
            if known[a]:
                dwell[i].append((k1 - k0) * dt)
        for a, (k0, i) in enumerate(entries):
            if not known[a]:
                continue
            seen = set()
            for k1, j in entries[a + 1:]:
                if j != i and j not in seen:
                    fpt[i][j].append((k1 - k0) * dt)
                    seen.add(j)
    total_time = seq.shape[0] * (seq.shape[1] - 1) * dt
    return {"counts": counts, "hops_per_time": float(counts.sum() / total_time),
            "mean_dwell": np.array([np.mean(x) if x else np.nan for x in dwell]),
            "mfpt": np.array([[np.mean(x) if x else np.nan for x in r] for r in fpt]),
            "radius": float(radius)}


def relative_field_error(f_net, f_target):
    """‖f_net − f‖ / ‖f‖ over points (the e_f of docs/model.md §4f, uncentred, on the given
    points)."""
    f_net, f_target = np.asarray(f_net, float), np.asarray(f_target, float)
    return float(np.linalg.norm(f_net - f_target) / max(np.linalg.norm(f_target), 1e-300))
