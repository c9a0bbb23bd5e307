"""The self-check at the end of a fit: is the network, sampled, the target — as far as a short
simulation can tell?

Held-out drift errors are averages; what a user needs to know is whether the *sampled* network
has the target's stationary law. The check samples the target twice (runs A and B, independent
noise) and the network once (run C, its own noise), at the target's step, each from its own
states drawn on the attractor,
and compares per coordinate a on the pooled states after a burn-in:

    mean    |m_C − m_A| / s_A             (in units of the target's std)
    std     s_C / s_A − 1
    law     TV(C, A) = ½ Σ_bins |p_C − p_A|   (40 bins over the target's 0.5–99.5 % range)

Each against its *sampling floor*: the same distance between two independent samples of the
target of the same size, estimated from random splits of A ∪ B into two halves of n trials
(the mean over SPLITS splits). A distance of a few floors is what finite sampling gives; the
verdict is "faithful" when, for every coordinate, TV ≤ 3 floors, the std differs by at most
max(5 %, 3 floors) and the mean by at most max(0.25 std, 3 floors), no more network trials than
target trials leave the box by half its width (a network that settles on an attractor the target
lacks), and few network states lie far from every target state (_spurious).
"""
import time as _time

import numpy as np

from .errors import DDMError

CHECK_STEPS = 10000   # Euler steps per trial: about 1 s for the target's 2 × 64 trials
# 64 trials: with 32, the target checked against a third run of itself (lorenz, 6 seeds) reached
# 2.8 floors in TV and 0.2 std in the mean of z1 (wing occupancy mixes slowly); with 64, 2.1
# floors and 0.14 std — below the thresholds below, which the long-run bench also uses for TV.
TRIALS = 64
SPLITS = 16
BINS = 40
TV_RATIO = 3.0
REL_TOL = 0.05        # std: within 5 % (or 3 floors)
MEAN_TOL = 0.25       # mean: within 0.25 of the target's std (or 3 floors); see TRIALS
FLOOR_FACTOR = 3.0
LEFT_MARGIN = 0.5     # box widths outside the box that count as "left the box"


def check_time(system):
    return min(float(system.duration), CHECK_STEPS * float(system.dt))


def _stats(runs, edges):
    """Per coordinate mean, std and histogram (probabilities) of runs (trials, T, d)."""
    z = runs.reshape(-1, runs.shape[2])
    hist = np.stack([np.histogram(np.clip(z[:, a], e[0], e[-1]), e)[0] / len(z)
                     for a, e in enumerate(edges)])
    return z.mean(axis=0), z.std(axis=0), hist


def _distances(s, ref):
    m, sd, h = s
    m0, sd0, h0 = ref
    sd0 = np.where(sd0 > 0, sd0, 1.0)
    return np.abs(m - m0) / sd0, sd / sd0 - 1.0, 0.5 * np.abs(h - h0).sum(axis=1)


def _left_box(runs, domain, share=0.1):
    """Trials that spend more than ``share`` of their records farther than LEFT_MARGIN box
    widths outside the box: settled elsewhere, not a brief heavy-tailed excursion."""
    lo, hi = domain[:, 0], domain[:, 1]
    w = LEFT_MARGIN * (hi - lo)
    with np.errstate(invalid="ignore"):
        out = ~np.all((runs >= lo - w) & (runs <= hi + w), axis=2)
    return int((out.mean(axis=1) > share).sum())


SPURIOUS = 0.02       # fraction of network states far from every target state that is a problem
CAP = 20000           # states per run used for the nearest-neighbour test


def _spurious(A, B, C, domain, rng):
    """Network states where the target never goes. In box-scaled coordinates, r is the 99th
    percentile of the distance from a state of run B to its nearest state of run A (how far apart
    two samples of the target's law lie); a network state farther than 2 r from every state of A
    is spurious. Returns (fraction of network states, the target's own fraction for B, states)."""
    from scipy.spatial import cKDTree
    width = domain[:, 1] - domain[:, 0]

    def some(X):
        X = X.reshape(-1, X.shape[2])
        return X[rng.choice(len(X), size=min(CAP, len(X)), replace=False)]

    a, b, c = some(A), some(B), some(C)
    tree = cKDTree(a / width)
    db = tree.query(b / width)[0]
    r = float(np.quantile(db, 0.99))
    dc = tree.query(c / width)[0]
    # only states near the box are added to training: far outside, the target's drift is huge
    # and would dominate the loss (such runs are counted by left_box instead)
    lo, hi = domain[:, 0] - LEFT_MARGIN * width, domain[:, 1] + LEFT_MARGIN * width
    far = (dc > 2 * r) & np.all((c >= lo) & (c <= hi), axis=1)
    return float(far.mean()), float((db > 2 * r).mean()), c[far]


def self_check(system, net, z0, seed, time=None, trials=TRIALS, states=None):
    """Sample target (twice) and network from states drawn from z0 (k, d), each run its own
    starts; return the check as a dict
    with "verdict" ("faithful" / "not faithful") and "problems" (what drifts apart).

    ``states``: a list that receives the network states far from every target state (the
    training measure adds them when it refits, so spurious attractors are trained away)."""
    from .simulate import sample_network, sample_target
    t0 = _time.perf_counter()
    time = check_time(system) if time is None else float(time)
    burn = 0.1 * time
    rng = np.random.default_rng([seed, 0xC4EC])
    # A, B and C start from *different* states drawn from z0 (states on the attractor): runs
    # that share a start stay correlated for a while, which would shrink the floor (two halves
    # of A ∪ B) and the distance alike, but not equally — with shared starts a faithful lorenz
    # fit (long-run TV 0.9 floors) came out at 3.5 floors
    z0 = np.asarray(z0, dtype=float)
    z0 = z0[rng.choice(len(z0), size=3 * trials, replace=len(z0) < 3 * trials)]
    seeds = rng.integers(2**62, size=3)
    # runs A and B in one call (one Python loop over steps): trials have their own streams
    ab = sample_target(system, trials=2 * trials, time=time, seed=int(seeds[0]),
                       z0=z0[: 2 * trials])
    keep = ab.t >= burn
    A, B = ab.z[:trials, keep], ab.z[trials:, keep]
    out = {"trials": trials, "time": time, "burn_in": burn, "verdict": "not faithful",
           "problems": []}
    try:
        # dt given: during fit the model's meta does not name its system yet, and the
        # network's default step would not be the target's (lorenz: 0.01 against 0.002, enough
        # Euler error to shift its marginals by 3.5 sampling floors)
        C = sample_network(net, trials=trials, time=time, seed=int(seeds[2]), dt=ab.meta["dt"],
                           z0=z0[2 * trials:]).z[:, keep]
    except DDMError as exc:
        out["problems"].append(f"the sampled network fails: {exc}")
        out["seconds"] = _time.perf_counter() - t0
        return out
    pooled = np.concatenate([A, B]).reshape(-1, system.d)
    lo, hi = np.quantile(pooled, 0.005, axis=0), np.quantile(pooled, 0.995, axis=0)
    hi = np.where(hi > lo, hi, lo + 1e-12)
    edges = [np.linspace(lo[k], hi[k], BINS + 1) for k in range(system.d)]
    ref = _stats(A, edges)
    dist = _distances(_stats(C, edges), ref)
    both = np.concatenate([A, B])
    floors = []
    for _ in range(SPLITS):
        perm = rng.permutation(2 * trials)
        h1, h2 = both[perm[:trials]], both[perm[trials:]]
        floors.append([np.abs(x) for x in _distances(_stats(h1, edges), _stats(h2, edges))])
    floor = [np.maximum(np.mean([f[i] for f in floors], axis=0), 1e-12) for i in range(3)]
    names = getattr(system, "coordinates", None) or [f"z{k + 1}" for k in range(system.d)]
    coords = []
    for k in range(system.d):
        row = {"coordinate": names[k], "mean_error": float(dist[0][k]),
               "mean_floor": float(floor[0][k]), "std_error": float(dist[1][k]),
               "std_floor": float(floor[1][k]), "tv": float(dist[2][k]),
               "tv_floor": float(floor[2][k]), "tv_ratio": float(dist[2][k] / floor[2][k])}
        coords.append(row)
        if row["tv_ratio"] > TV_RATIO:
            out["problems"].append(f"{names[k]}'s distribution differs by {row['tv_ratio']:.1f}× "
                                   "its sampling floor")
        if abs(row["std_error"]) > max(REL_TOL, FLOOR_FACTOR * row["std_floor"]):
            out["problems"].append(f"{names[k]}'s std is off by {100 * row['std_error']:+.1f} % "
                                   f"(floor {100 * row['std_floor']:.1f} %)")
        if row["mean_error"] > max(MEAN_TOL, FLOOR_FACTOR * row["mean_floor"]):
            out["problems"].append(f"{names[k]}'s mean is off by {row['mean_error']:.3g} stds "
                                   f"(floor {row['mean_floor']:.2g})")
    out["coordinates"] = coords
    left_c = _left_box(C, system.domain)
    left_t = max(_left_box(A, system.domain), _left_box(B, system.domain))
    out["left_box"] = {"network": left_c, "target": left_t}
    if left_c > left_t:
        out["problems"].append(f"{left_c} of {trials} network trials stay outside the box "
                               f"(target: {left_t}): the network has an attractor the target "
                               "lacks")
    frac, own, far = _spurious(A, B, C, system.domain, rng)
    out["spurious_fraction"] = {"network": frac, "target": own}
    if frac > max(SPURIOUS, 3 * own):
        out["problems"].append(f"{100 * frac:.1f} % of the network's states lie where the target "
                               f"never goes (target's own: {100 * own:.1f} %)")
    if states is not None:
        states.append(far)
    out["tv_ratio_max"] = max(r["tv_ratio"] for r in coords)
    out["verdict"] = "faithful" if not out["problems"] else "not faithful"
    out["seconds"] = _time.perf_counter() - t0
    return out


ADVICE = ("try more --neurons, a larger --max-iter, or more of the target's own states in the "
          "training mix (--visited)")


def describe(check):
    """One line for the user."""
    if check["verdict"] == "faithful":
        return (f"self-check: faithful (network vs target over {check['trials']} trials × "
                f"{check['time']:g} time units: every coordinate's distribution within "
                f"{check['tv_ratio_max']:.1f}× its sampling floor)")
    problems = check["problems"]
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3
                                       else "")
    return "self-check: NOT faithful: " + shown + "; " + ADVICE
