"""Observed trajectories (trajectory files, docs/formats.md §2) as the learner sees them:
validated time stamps, NaN gaps splitting trials into segments, increments that never cross a gap,
and the split into training and held-out trials."""
import numpy as np

from ..errors import DDMError
from ..simulate import Trajectories, real_array


class Observations:
    """Validated trajectories: t (T,), z (trials, T, d), Δt, and the valid segments.

    A time row is valid when all d coordinates are finite; NaN gaps split a trial into segments
    (maximal runs of valid rows), and increments never cross a gap.
    """

    def __init__(self, t, z, meta=None, source="data"):
        t = real_array(t, "t", source)
        z = real_array(z, "z", source)
        if z.ndim != 3:
            raise DDMError(f"{source}: key 'z' must have shape (trials, T, d), got {z.shape}")
        if t.ndim != 1 or t.shape[0] != z.shape[1]:
            raise DDMError(f"{source}: key 't' has shape {t.shape}, expected ({z.shape[1]},) "
                           "to match 'z' (trials, T, d)")
        if z.shape[1] < 3:
            raise DDMError(f"{source}: need at least 3 time points, got {z.shape[1]}")
        if not np.all(np.isfinite(t)):
            raise DDMError(f"{source}: key 't' has non-finite time stamps")
        steps = np.diff(t)
        if np.any(steps <= 0):
            raise DDMError(f"{source}: time stamps must increase strictly "
                           f"(t[{int(np.argmin(steps)) + 1}] <= the one before)")
        dt = float(np.median(steps))
        if np.max(np.abs(steps - dt)) > 1e-6 * dt:
            k = int(np.argmax(np.abs(steps - dt)))
            raise DDMError(f"{source}: irregular time stamps (step {steps[k]:.6g} at t = "
                           f"{t[k]:.6g}, median step {dt:.6g}); increment matching needs one "
                           "sampling interval: resample onto a uniform grid (e.g. numpy.interp) "
                           "or put NaN rows where samples are missing")
        self.t, self.z, self.dt = t, z, dt
        self.meta = dict(meta or {})
        self.source = source
        self.valid = np.all(np.isfinite(z), axis=2)            # (trials, T)
        if self.valid.sum() < 3:
            raise DDMError(f"{source}: fewer than 3 finite samples")
        for a in range(z.shape[2]):
            col = z[..., a][self.valid]
            if col.size and np.ptp(col) <= 1e-12 * max(1.0, float(np.max(np.abs(col)))):
                raise DDMError(f"{source}: coordinate {a} of 'z' is constant ({col[0]:g}); "
                               "there is no dynamics to learn in it: drop it or check the data")

    trials = property(lambda self: self.z.shape[0])
    d = property(lambda self: self.z.shape[2])

    def pairs(self, trials, lag=1):
        """(z_k, z_{k+lag}) for k, k+lag in the same valid segment of the given trials."""
        z0, z1 = [], []
        for tr in trials:
            ok = self.valid[tr]
            # a pair is inside one segment iff every row from k to k+lag is valid
            run = np.convolve(ok.astype(int), np.ones(lag + 1, dtype=int), "valid") == lag + 1
            k = np.flatnonzero(run)
            z0.append(self.z[tr, k])
            z1.append(self.z[tr, k + lag])
        return np.concatenate(z0), np.concatenate(z1)


def load_observations(data):
    """Observations from a Trajectories object or a trajectory file (docs/formats.md §2)."""
    if isinstance(data, Observations):
        return data
    if isinstance(data, Trajectories):
        return Observations(data.t, data.z, data.meta, "trajectories")
    traj = Trajectories.load(data)
    return Observations(traj.t, traj.z, traj.meta, str(data))


def _split(obs, holdout):
    """Held-out trials: the last round(holdout·trials) (at least 1 when there are ≥ 2 trials).

    With a single trial, its last fraction of time is held out instead (a NaN row separates the
    two parts, so no increment crosses them).
    """
    if obs.trials >= 2:
        n_val = min(obs.trials - 1, max(1, int(round(holdout * obs.trials))))
        return obs, list(range(obs.trials - n_val)), list(range(obs.trials - n_val, obs.trials))
    T = obs.z.shape[1]
    cut = int(T * (1 - holdout))
    z = np.full((2, T, obs.d), np.nan)
    z[0, :cut] = obs.z[0, :cut]
    z[1, cut + 1:] = obs.z[0, cut + 1:]
    return Observations(obs.t, z, obs.meta, obs.source), [0], [1]
