"""Where a fit is trained and judged: the box, and the states the target itself visits.

A drift that is right on average over the sampling box can be wrong where the dynamics lives:
Rössler's z (x − c) reaches 500 in its box, but on the attractor the z drift is about 0.2, so an
error that ruins the attractor weighs 0.1 % of a box-uniform loss. The training measure is
therefore a mixture

    μ = (1 − w) · Uniform(box) + w · μ_visited,

where μ_visited is the empirical law of an ensemble of short target runs started uniformly in the
box, recorded after a burn-in (an approximation of the stationary law that also covers every
basin the box reaches, since the starts are spread over the box). The box part stays, because
escapes and transients go off the attractor and the network must bring them back as the target
does. Runs that escape far beyond the box (Rössler from some corners) are dropped and counted.

Held-out figures of fit are computed on states of *other* runs (other seeds), so e_f measures
the error on the states the dynamics visits, and the box figures are reported apart.
"""
import math

import numpy as np

from .errors import DDMError

STEP_BUDGET = 5000      # Euler steps per visiting run: about 0.3 s for 96 runs of a numpy drift
BURN_FRACTION = 0.25    # the first quarter of each run is transient and not recorded
ESCAPE_MARGIN = 1.0     # a run farther than this many box widths outside the box has escaped


class Visited:
    """States recorded from target runs that stayed near the box: ``z`` (runs, T, d) after the
    burn-in; ``started`` runs, ``escaped`` dropped, ``time`` per run, ``burn`` its transient."""

    def __init__(self, z, started, escaped, time, burn):
        self.z, self.started, self.escaped, self.time, self.burn = z, started, escaped, time, burn

    def pooled(self, runs=slice(None)):
        return self.z[runs].reshape(-1, self.z.shape[2])

    def summary(self, domain):
        z = self.pooled()
        lo, hi = domain[:, 0], domain[:, 1]
        outside = float(np.mean(~np.all((z >= lo) & (z <= hi), axis=1))) if len(z) else 0.0
        return {"runs": self.started, "escaped": self.escaped, "time": self.time,
                "burn_in": self.burn, "states": int(len(z)), "outside_box": outside}


def run_length(system):
    """Time per visiting run: the system's suggested duration, at most STEP_BUDGET steps."""
    return min(float(system.duration), STEP_BUDGET * float(system.dt))


def visit(system, runs, seed, time=None, records=200):
    """Run ``runs`` target trials from uniform box points; keep ``records`` states of each after
    the burn-in. Runs that escape (ESCAPE_MARGIN box widths beyond the box) are dropped.

    Inputs (p > 0) are zero during these runs: the visited *states* are what is sampled; the
    inputs at those states are drawn from the input box when the drift is evaluated.
    """
    from .simulate import sample_target        # simulate imports matching's neighbours
    time = run_length(system) if time is None else float(time)
    burn = BURN_FRACTION * time
    every = max(1, int(round((time - burn) / system.dt / records)))
    traj = sample_target(system, trials=int(runs), time=time, seed=int(seed),
                         record_every=every, drop_escaped=ESCAPE_MARGIN)
    kept = np.isfinite(traj.z).all(axis=(1, 2))
    z = traj.z[kept][:, traj.t >= burn]
    return Visited(np.ascontiguousarray(z), int(runs), len(traj.meta["escaped"]), time, burn)


def pick(z, n, rng):
    """n states drawn from z (without replacement while there are enough)."""
    if len(z) == 0:
        raise DDMError("no visited states to draw from")
    idx = rng.choice(len(z), size=n, replace=n > len(z))
    return z[idx]


def check_fraction(value):
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise DDMError(f"the visited-state fraction must be in [0, 1], got {value:g}")
    return value
