"""Sampling (docs/model.md §6): Euler–Maruyama for the network (N dims) and for the target (d dims).

Both use one xoroshiro128+ stream per trial (rng.py), so a run is the same whatever the thread
count, and with the same seed the network and the target see the same latent noise ξ (when the
network has no private noise): their paths can be compared trial by trial.
"""
import collections
import json
import math
import os
import time as _time
import warnings

import numpy as np

from ._version import __version__
from .backends import DEFAULT_DEVICE, select
from .backends.arrays import NetworkArrays, PathArrays, RunSettings
from .errors import DDMError, checked_number
from .network import Network, atomic_savez, check_system_meta, read_meta, read_npz
from .rng import fill_normals, fill_uniforms, make_states
from .threads import Governor
from . import interrupt
from .resources import require
from .systems import get_system, system_from_record, user_call

TRAJ_FORMAT = "ddm_numba.trajectories/1"
MAX_RECORD_BYTES = 4 * 2**30


class DataWarning(UserWarning):
    """Data that were read, but not as they were stored (the message says what was done)."""


# beyond this, squares and sums of the data overflow float64
MAX_DATA_MAGNITUDE = 1e100


def real_array(value, key, source):
    """A file's or caller's array as float64: real floats as they are, integers cast with a
    warning that says so; booleans, complex numbers, strings and objects refused."""
    arr = np.asarray(value)
    kind = arr.dtype.kind
    if kind == "f":
        out = arr.astype(float, copy=False)
    elif kind in "iu":
        warnings.warn(f"{source}: key {key!r} holds integers ({arr.dtype}); read as float64. "
                      "Integer data are often quantized or scaled recordings: check units and "
                      "resolution", DataWarning, stacklevel=3)
        out = arr.astype(float)
    else:
        what = {"b": "booleans", "c": "complex numbers", "U": "strings", "S": "bytes",
                "O": "Python objects"}.get(kind, f"dtype {arr.dtype}")
        raise DDMError(f"{source}: key {key!r} holds {what}; it must hold real numbers "
                       "(float, or integers)")
    with np.errstate(invalid="ignore"):
        big = np.nanmax(np.abs(out)) if out.size and not np.all(np.isnan(out)) else 0.0
    if np.isinf(big) or big > MAX_DATA_MAGNITUDE:
        raise DDMError(f"{source}: key {key!r} has values up to {big:.3g} (or infinite); beyond "
                       f"{MAX_DATA_MAGNITUDE:g} the fit's squares overflow: rescale the data "
                       "(NaN marks missing samples)")
    return out


def parse_input(text, p):
    """'t0:t1:u1,u2' -> (t0, t1, array of p values); errors name the text."""
    parts = text.split(":")
    if len(parts) != 3:
        raise DDMError(f"malformed --input {text!r}: write T0:T1:U1,U2,... "
                       "(e.g. 10:20:1,0 applies u = (1, 0) for 10 <= t < 20)")
    try:
        t0, t1 = float(parts[0]), float(parts[1])
        u = np.array([float(v) for v in parts[2].split(",")])
    except ValueError:
        raise DDMError(f"malformed --input {text!r}: times and values must be numbers") from None
    if not (np.isfinite(t0) and np.isfinite(t1) and np.all(np.isfinite(u))):
        raise DDMError(f"malformed --input {text!r}: values must be finite")
    if not t0 < t1:
        raise DDMError(f"malformed --input {text!r}: the start {t0} must be before the end {t1}")
    if p == 0:
        raise DDMError(f"--input {text!r} given, but this system takes no inputs")
    if u.size != p:
        raise DDMError(f"--input {text!r} has {u.size} values, the system has {p} inputs")
    return t0, t1, u


def input_array(schedule, p, n_steps, dt, first=0):
    """Per-step inputs U (n_steps, p) of a piecewise-constant schedule [(t0, t1, u), ...], for
    steps first, first + 1, ... (the sampler asks chunk by chunk).

    Step s uses u(t_s), t_s = s·dt; intervals are half-open [t0, t1) and may not overlap.
    """
    _check_overlap(schedule)
    return inputs_at(schedule, p, first + np.arange(n_steps), dt)


def inputs_at(schedule, p, steps, dt):
    """u(t_s) (len(steps), p) at the given step indices s (t_s = s·dt), for a schedule whose
    intervals do not overlap."""
    U = np.zeros((len(steps), p))
    if not p or not schedule:
        return U
    t = np.asarray(steps) * dt
    for t0, t1, u in schedule:
        U[(t >= t0 - 1e-12 * dt) & (t < t1 - 1e-12 * dt)] = u
    return U


def _check_overlap(schedule):
    spans = sorted((float(t0), float(t1)) for t0, t1, _ in schedule)
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        if b0 < a1:
            raise DDMError(f"input intervals {a0:g}:{a1:g} and {b0:g}:{b1:g} overlap")
    return spans


def check_schedule(schedule, duration):
    """Refuse overlapping intervals and intervals wholly outside the run [0, duration)."""
    for t0, t1 in _check_overlap(schedule):
        if t1 <= 0 or t0 >= duration:
            raise DDMError(f"input interval {t0:g}:{t1:g} lies wholly outside the run "
                           f"[0, {duration:g}): it would have no effect; lengthen --time or "
                           "move the interval")


class Trajectories:
    """Recorded paths: t (T,), z (trials, T, d), optionally x (trials, T, N) and u (T, p)."""

    def __init__(self, t, z, x=None, u=None, meta=None):
        self.t, self.z, self.x, self.u = t, z, x, u
        self.meta = dict(meta or {})

    def save(self, path):
        arrays = {"format": np.array(TRAJ_FORMAT), "t": self.t, "z": self.z,
                  "meta": np.array(json.dumps(self.meta, sort_keys=True))}
        if self.x is not None:
            arrays["x"] = self.x
        if self.u is not None:
            arrays["u"] = self.u
        atomic_savez(path, arrays)

    @classmethod
    def load(cls, path):
        arrays = read_npz(path, "trajectory")
        for key in ("t", "z"):
            if key not in arrays:
                raise DDMError(f"{path}: trajectory key {key!r} is missing")
        t = real_array(arrays["t"], "t", path)
        z = real_array(arrays["z"], "z", path)
        if t.ndim != 1 or z.ndim != 3 or z.shape[1] != t.shape[0]:
            raise DDMError(f"{path}: trajectory keys 't' {t.shape} and 'z' {z.shape} do not fit "
                           "(expected (T,) and (trials, T, d))")
        x, u = arrays.get("x"), arrays.get("u")
        if x is not None and (x.ndim != 3 or x.shape[:2] != z.shape[:2]):
            raise DDMError(f"{path}: trajectory key 'x' has shape {x.shape}, expected "
                           f"({z.shape[0]}, {z.shape[1]}, N)")
        if u is not None and (u.ndim != 2 or u.shape[0] != t.shape[0]):
            raise DDMError(f"{path}: trajectory key 'u' has shape {u.shape}, expected "
                           f"({t.shape[0]}, p)")
        if x is not None:
            x = real_array(x, "x", path)
        if u is not None:
            u = real_array(u, "u", path)
        meta = read_meta(arrays.get("meta"), path, "trajectory")
        check_system_meta(meta, path, z.shape[2])
        return cls(t, z, x, u, meta)

    def stationary(self, burn_in):
        """All recorded z with t >= burn_in, pooled over trials: (samples, d)."""
        return self.stationary_trials(burn_in).reshape(-1, self.z.shape[2])

    def stationary_trials(self, burn_in):
        """The recorded z with t >= burn_in, trial by trial: (trials, T', d)."""
        keep = self.t >= burn_in
        if not keep.any():
            raise DDMError(f"no record at t >= {burn_in:g} (the run ends at t = {self.t[-1]:g}); "
                           "lower the burn-in or sample longer")
        return self.z[:, keep]


MAX_STEPS = 10**9          # per trial: beyond, a run takes hours; ask for a coarser step


def run_steps(time, dt, record_every):
    """(n_steps, every): the run's Euler steps and the recording stride. The run never gets
    longer than asked: n_steps is rounded down to a whole number of records."""
    try:
        time, dt = float(time), float(dt)
    except (TypeError, ValueError):
        raise DDMError(f"time and dt must be numbers (got time={time!r}, dt={dt!r})") from None
    if not (math.isfinite(time) and time > 0 and math.isfinite(dt) and dt > 0):
        raise DDMError(f"time and dt must be finite and > 0 (got time={time}, dt={dt})")
    if time / dt > MAX_STEPS:
        raise DDMError(f"time {time:g} at dt {dt:g} is {time / dt:.3g} steps per trial (at most "
                       f"{MAX_STEPS:.0e}); use a larger --dt or a shorter --time")
    n_steps = int(round(time / dt))
    if n_steps < 1:
        raise DDMError(f"time {time:g} is shorter than one step dt = {dt:g}")
    if record_every:
        every = int(record_every)
        if every < 1:
            raise DDMError(f"record_every must be >= 1, got {record_every}")
        if every > n_steps:
            raise DDMError(f"--record-every {every} steps ({every * dt:g} time units) is longer "
                           f"than the run ({n_steps} steps of {dt:g}); record more often or "
                           "sample longer")
    else:
        every = min(n_steps, max(1, int(round(0.05 / dt))))
    return (n_steps // every) * every, every


def _initial_latent(z0, trials, d, domain, states):
    """The trials' initial latent states: z0 ((d,) for all, or (trials, d)), or without it
    uniform in the box, trial i's from the first d draws of its own stream (states[i], then
    advanced past them), so that a trial starts where it would in any shard of the run."""
    if z0 is None:
        lo, hi = domain[:, 0], domain[:, 1]
        u = np.empty((trials, d))
        fill_uniforms(states, u)
        return lo + (hi - lo) * u
    z0 = np.asarray(z0, dtype=float)
    if z0.shape == (d,):
        return np.tile(z0, (trials, 1))
    if z0.shape != (trials, d):
        raise DDMError(f"z0 must have shape ({d},) or ({trials}, {d}), got {z0.shape}")
    return z0.copy()


def _check_blowup(blowup, dt, what, hint):
    bad = np.flatnonzero(blowup >= 0)
    if bad.size:
        tr = int(bad[0])
        raise DDMError(f"{what}: trial {tr} became non-finite at t = {blowup[tr] * dt:g} "
                       f"({bad.size} trial(s) in all); {hint}")


def _diverged(z, t0, dt_rec, scale, what, hint):
    """Paths that ran off by many orders of magnitude beyond the box are as wrong as NaN."""
    with np.errstate(invalid="ignore"):
        size = np.abs(z).max(axis=2)                        # (trials, records)
    bad = size > DIVERGED * scale
    if bad.any():
        tr, rec = np.unravel_index(int(np.argmax(bad)), bad.shape)
        n = int(bad.any(axis=1).sum())
        raise DDMError(f"{what}: trial {tr} diverged (|z| = {size[tr, rec]:.3g} at t = "
                       f"{t0 + rec * dt_rec:g}, the box spans {scale:.3g}; {n} trial(s) in all); "
                       f"{hint}")


DIVERGED = 1e6   # |z| beyond this many box sizes counts as a blow-up


def _escape_error(what, bad, step, dt, z_start, left_box, lo, hi, hint):
    """A target trial ran away: say from where, and whether it had left the box long before
    (the dynamics escaping, not the step) or blew up inside it (the step)."""
    tr = int(np.flatnonzero(bad)[0])
    start = ", ".join(f"{v:.3g}" for v in z_start[tr])
    n = int(bad.sum())
    if 0 <= left_box[tr] < step and "smaller --dt" not in hint:   # at a sensible step
        raise DDMError(
            f"{what}: trial {tr}, started at ({start}), left the box at t = "
            f"{left_box[tr] * dt:g} and ran off to infinity by t = {step * dt:g} ({n} trial(s) "
            f"in all). The dynamics escapes from there, not the step: start inside the basin "
            f"that stays bounded (z0, --z0) or check the box (domain)")
    _check_blowup(np.where(bad, step, -1), dt, what, hint)


def _common_meta(kind, seed, dt, every, schedule, first_trial):
    return {"kind": kind, "seed": seed, "first_trial": first_trial, "dt": dt,
            "record_every": every,
            "inputs": [[t0, t1, list(map(float, u))] for t0, t1, u in schedule],
            "version": __version__}


def _dt_hint(dt, suggested, what):
    if dt > 1.5 * suggested:
        return (f"dt = {dt:g} is {dt / suggested:.3g}× the suggested step {suggested:g}: try a "
                "smaller --dt")
    return (f"at dt = {dt:g} (suggested {suggested:g}) the step is not the likely cause: the "
            f"{what} itself runs away from some initial states (drawn uniformly in the box); "
            "check the box (domain) and the dynamics, or give initial states (z0)")


class _Progress:
    """Progress lines on a stream: after ``delay`` seconds, then every ``every`` seconds."""

    def __init__(self, stream, label, total_steps, trials, unit_work, delay=2.0, every=5.0):
        self.stream, self.label, self.total, self.trials = stream, label, total_steps, trials
        self.unit_work = unit_work      # (name, work per trial-step), e.g. ("neuron-steps", N)
        self.t0 = _time.perf_counter()
        self.next = self.t0 + delay
        self.every = every
        self.shown = False

    def update(self, done, dt):
        now = _time.perf_counter()
        if self.stream is None or now < self.next or done >= self.total:
            return
        self.next = now + self.every
        self.shown = True
        el = now - self.t0
        name, work = self.unit_work
        rate = done * self.trials * work / el
        eta = el * (self.total - done) / max(done, 1)
        print(f"  {self.label}: {100 * done / self.total:5.1f}% (t = {done * dt:g} of "
              f"{self.total * dt:g}, {self.trials} trials), {rate:.2g} {name}/s, "
              f"ETA {eta:.0f}s", file=self.stream, flush=True)

    def finish(self):
        if self.shown and self.stream is not None:
            print(f"  {self.label}: done in {_time.perf_counter() - self.t0:.1f}s",
                  file=self.stream, flush=True)


def _record_bytes(trials, T, width):
    """Bytes of the recorded arrays (trials × T × width float64), refused beyond the cap."""
    nbytes = trials * T * width * 8
    if nbytes > MAX_RECORD_BYTES:
        raise DDMError(f"recording would take {nbytes / 2**30:.1f} GiB; record less often "
                       "(--record-every), fewer trials or a shorter --time")
    return nbytes


CHUNK_SECONDS = 0.25     # target wall time of one sampling chunk (the latency of Ctrl-C)


def _run_chunks(step_chunk, n_steps, every, dt, first_chunk, progress):
    """Drive step_chunk(first, n, rec) over the run in chunks of whole records.

    step_chunk(first, n, rec) advances every trial by n steps from step ``first`` and writes the
    records rec … rec + n/every. Chunks are sized to take about CHUNK_SECONDS (the first is
    ``first_chunk`` steps); between chunks a signal is acted on and progress reported. The
    chunking never changes the numbers: each trial's state and random stream carry over exactly.
    Each chunk runs with the numba thread count a threads.Governor finds fastest under the
    current load (the paths do not depend on it).
    """
    done, rec = 0, 0
    chunk = max(every, (first_chunk // every) * every)
    governor = Governor()     # the numba thread count that the load allows (threads.py)
    while done < n_steps:
        # a probe of another thread count gets a quarter chunk: under load it may run at a
        # fraction of the best speed (the governor measures per step, so its size is free)
        probe = governor.probing()
        size = max(every, chunk // 4 // every * every) if probe else chunk
        n = min(size, n_steps - done)
        t0 = _time.perf_counter()
        governor.run(step_chunk, done, n, rec, work=n)
        elapsed = _time.perf_counter() - t0
        done += n
        rec += n // every
        progress.update(done, dt)
        interrupt.check("sampling")
        if not probe:     # a probe's time says nothing about the best count's chunk size
            grow = CHUNK_SECONDS / max(elapsed, 1e-4)
            chunk = max(every, int(chunk * min(4.0, max(0.25, grow))) // every * every)
    progress.finish()


def sample_network(net, trials=100, time=100.0, seed=0, dt=None, record_every=None,
                   inputs=(), save_neurons=False, z0=None, device=DEFAULT_DEVICE, dtype="float64",
                   progress=None, first_trial=0):
    """Simulate the network from x0 = M z0 + c; returns Trajectories of z = P (x − c).

    Trials are numbered first_trial, first_trial + 1, …: trial i has its own random stream, which
    draws its start (without z0) and then its noise, so trials [a, b) of a run equal, bit for bit,
    rows a … b − 1 of any run with the same seed and settings that contains them (a run can be
    split into shards anywhere, rng.make_states).

    device: "cpu", "cuda" or "auto" (CUDA when a GPU is usable); the same seed gives the same
    paths on either, up to rounding. dtype: "float64", or "float32" on CUDA. progress: a text
    stream for progress lines on long runs (None: silent). The run goes in chunks of a fraction
    of a second: Ctrl-C stops it at the next chunk (raising interrupt.Interrupted).
    """
    if isinstance(net, (str, os.PathLike)):
        net = Network.load(net)
    if not isinstance(net, Network):
        raise DDMError(f"sample_network needs a Network or a model file, got {type(net).__name__}")
    backend, why = select(device)
    device = backend.NAME
    if dtype not in ("float64", "float32"):
        raise DDMError(f"dtype must be float64 or float32, got {dtype!r}")
    if dtype == "float32" and device != "cuda":
        raise DDMError("float32 sampling is for the CUDA backend; the CPU backend computes in "
                       "float64 (leave --dtype at float64 or use --device cuda)")
    trials = checked_number(trials, "trials", 1, integer=True)
    first_trial = checked_number(first_trial, "first_trial", 0, 2**62, integer=True)
    sysmeta = net.meta.get("system", {})
    suggested = float(sysmeta.get("dt", 0.01))
    dt = float(dt if dt else suggested)
    n_steps, every = run_steps(time, dt, record_every)
    if dt > net.tau:
        raise DDMError(f"dt = {dt:g} is longer than the neurons' time constant τ = {net.tau:g}: "
                       "Euler–Maruyama overshoots the leak −x/τ and the network blows up; use "
                       f"--dt below τ (the model suggests {suggested:g})")
    T = n_steps // every + 1
    N, d, p = net.N, net.d, net.p
    bytes_rec = _record_bytes(trials, T, d + (N if save_neurons else 0))
    work = bytes_rec + 4 * trials * N * 8 + (N * N * 8 if net.mode == "full" else 0)
    require(work, f"sampling {trials} trials of {N} neurons", "use fewer --trials or record "
            "less often")
    schedule = [parse_input(s, p) if isinstance(s, str) else s for s in inputs]
    check_schedule(schedule, n_steps * dt)
    domain = np.asarray(sysmeta.get("domain", [[-1.0, 1.0]] * d), dtype=float)
    states = make_states(trials, seed, first_trial)
    z_init = _initial_latent(z0, trials, d, domain, states)
    x = np.ascontiguousarray(net.embed(z_init))
    z_out = np.zeros((trials, T, d))
    x_out = np.zeros((trials, T, N) if save_neurons else (1, 1, 1))
    full = net.mode == "full"
    arrays = NetworkArrays.of(net)
    options = {"dtype": np.dtype(dtype).type} if device == "cuda" else {}
    hint = _dt_hint(dt, suggested, "network")
    scale = float(np.max(domain[:, 1] - domain[:, 0]))
    bar = _Progress(progress, f"sampling the network ({device})", n_steps, trials,
                    ("neuron-steps", N))

    def step_chunk(first, n, rec):
        Tc = n // every + 1
        # one row of U per step and the last record
        run = RunSettings(input_array(schedule, p, n + 1, dt, first), dt, n, every,
                          bool(save_neurons))
        paths = PathArrays.empty(x, states, run, d)
        blowup = backend.simulate_network(arrays, run, paths, **options)
        _check_blowup(np.where(blowup >= 0, blowup + first, -1), dt, "network", hint)
        _diverged(paths.z_out, first * dt, every * dt, scale, "network", hint)
        z_out[:, rec:rec + Tc] = paths.z_out
        if save_neurons:
            x_out[:, rec:rec + Tc] = paths.x_out

    # the first chunk: about 0.1 s at a typical rate (3e8 neuron-steps/s low-rank, 3e7 full)
    rate = 3e7 if full else 3e8
    _run_chunks(step_chunk, n_steps, every, dt, int(0.1 * rate / (trials * N)) + 1, bar)
    meta = _common_meta("network", seed, dt, every, schedule, first_trial)
    meta.update({"system": sysmeta, "N": N, "mode": net.mode, "device": device,
                 "device_reason": why, "dtype": dtype})
    U_rec = inputs_at(schedule, p, np.arange(T) * every, dt) if p else None
    return Trajectories(np.arange(T) * every * dt, z_out, x_out if save_neurons else None,
                        U_rec, meta)


def sample_target(system, trials=100, time=100.0, seed=0, dt=None, record_every=None,
                  inputs=(), z0=None, progress=None, drop_escaped=None, first_trial=0):
    """Simulate the target SDE itself (same seeds, same noise draws as sample_network; trials
    numbered from first_trial as there).

    A trial that leaves the box far behind (or goes non-finite) is an error that names where it
    started and when it left the box, unless ``drop_escaped`` is a margin in box widths: then a
    trial farther than that outside the box is stopped there, its records from then on are NaN,
    and ``meta["escaped"]`` lists (trial, t) of each — how the training measure collects the
    target's own states from box points, some of which (Rössler's corners) run off to infinity.
    """
    system = get_system(system)
    trials = checked_number(trials, "trials", 1, integer=True)
    first_trial = checked_number(first_trial, "first_trial", 0, 2**62, integer=True)
    dt = float(dt if dt else system.dt)
    n_steps, every = run_steps(time, dt, record_every)
    T = n_steps // every + 1
    d, m, p = system.d, system.m, system.p
    require(_record_bytes(trials, T, d) + 8 * trials * d * (m + 4) * 8,
            f"sampling {trials} trials of the target", "use fewer --trials")
    schedule = [parse_input(s, p) if isinstance(s, str) else s for s in inputs]
    check_schedule(schedule, n_steps * dt)
    states = make_states(trials, seed, first_trial)
    z = _initial_latent(z0, trials, d, system.domain, states)
    xi = np.empty((trials, m))
    z_out = np.zeros((trials, T, d))
    sqdt = np.sqrt(dt)
    hint = _dt_hint(dt, system.dt, f"target {system.name}")
    scale = float(np.max(system.domain[:, 1] - system.domain[:, 0]))
    what = f"target {system.name}"
    bar = _Progress(progress, f"sampling the target {system.name}", n_steps, trials,
                    ("trial-steps", 1))
    U = np.zeros((0, p))
    lo, hi = system.domain[:, 0], system.domain[:, 1]
    width = hi - lo
    z_start = z.copy()
    left_box = np.full(trials, -1)            # the first record at which a trial was outside
    escaped = np.full(trials, -1)             # drop_escaped: the record at which it was stopped
    for step in range(n_steps + 1):
        if step % every == 0:
            with np.errstate(invalid="ignore"):
                outside = ~np.all((z >= lo) & (z <= hi), axis=1)
            left_box[(left_box < 0) & outside] = step
            if drop_escaped is not None:
                with np.errstate(invalid="ignore"):
                    far = ~np.all((z >= lo - drop_escaped * width) &
                                  (z <= hi + drop_escaped * width), axis=1)
                new = far & (escaped < 0)
                escaped[new] = step
                z[escaped >= 0] = 0.5 * (lo + hi)   # kept evaluable; recorded as NaN
                z_out[:, step // every] = np.where((escaped >= 0)[:, None], np.nan, z)
            else:
                z_out[:, step // every] = z
                bad = ~np.isfinite(z).all(axis=1)
                with np.errstate(invalid="ignore"):
                    bad |= np.abs(z).max(axis=1) > DIVERGED * scale
                if bad.any():
                    _escape_error(what, bad, step, dt, z_start, left_box, lo, hi, hint)
            bar.update(step, dt)
            interrupt.check("sampling the target")
        if step == n_steps:
            break
        if p:
            if step % 4096 == 0:            # the inputs, a block of steps at a time
                U = input_array(schedule, p, min(4096, n_steps + 1 - step), dt, step)
            u = np.broadcast_to(U[step % 4096], (trials, p))
        else:
            u = None
        with np.errstate(all="ignore"):
            f = user_call(f"system {system.name!r}'s drift", system.drift, z, u)
            g = user_call(f"system {system.name!r}'s diffusion", system.diffusion, z)
            f = np.asarray(f, dtype=float)
            g = np.asarray(g, dtype=float)
        if f.shape != (trials, d) or g.shape != (trials, d, m):
            raise DDMError(f"system {system.name!r}: drift/diffusion returned shapes {f.shape}, "
                           f"{g.shape}; expected {(trials, d)}, {(trials, d, m)}")
        fill_normals(states, xi)
        with np.errstate(all="ignore"):
            z = z + f * dt + np.einsum("kam,km->ka", g, xi) * sqdt
    bar.finish()
    meta = _common_meta("target", seed, dt, every, schedule, first_trial)
    meta["system"] = system.record()
    if drop_escaped is not None:
        meta["escaped"] = [[int(k), float(escaped[k] * dt)] for k in np.flatnonzero(escaped >= 0)]
    U_rec = inputs_at(schedule, p, np.arange(T) * every, dt) if p else None
    return Trajectories(np.arange(T) * every * dt, z_out, None, U_rec, meta)


Pair = collections.namedtuple("Pair", "network target")
Pair.__doc__ = """The network and its target sampled side by side (sample_pair): Trajectories."""


def sample_pair(net, system=None, trials=100, time=100.0, seed=0, dt=None, record_every=None,
                inputs=(), save_neurons=False, z0=None, device=DEFAULT_DEVICE, dtype="float64",
                progress=None, first_trial=0):
    """Sample the network and its target SDE with the same seed, starts and inputs, for a
    trial-by-trial comparison; returns Pair(network, target), each Trajectories.

    The halves are exactly sample_network(net, …) and sample_target(system, …) with these
    arguments (save_neurons, device and dtype are the network's). system: the target (a System,
    a built-in's name or a spec); None: the one the model was fitted to (target_of). With the
    same seed both see the same latent noise ξ (when the network has no private noise). The
    starts are z0, or without it drawn with the seed from each side's box (the model's
    meta.system.domain and the system's domain) — the same box, so the same starts, for a model
    fitted to that system. dt None: each side's suggested step, the same number for a fitted model.
    """
    if isinstance(net, (str, os.PathLike)):
        net = Network.load(net)
    system = target_of(net) if system is None else get_system(system)
    kw = dict(trials=trials, time=time, seed=seed, dt=dt, record_every=record_every,
              inputs=inputs, z0=z0, progress=progress, first_trial=first_trial)
    network = sample_network(net, save_neurons=save_neurons, device=device, dtype=dtype, **kw)
    return Pair(network, sample_target(system, **kw))


def target_of(net, system=None):
    """The target system a model was fitted to, from its metadata — a built-in by name; a user's
    own system only when the caller passes it (``system``: a spec or System), since opening a
    file never imports or runs anything named inside it."""
    sysmeta = net.meta.get("system")
    if not sysmeta:
        if system is not None:
            return get_system(system)
        raise DDMError("this model's metadata names no target system")
    target = system_from_record(sysmeta, given=system)
    if target is None:
        raise DDMError("this model was fitted to data with no known system behind it, so it "
                       "has no target SDE to sample or compare with (fit with --truth SYSTEM "
                       "if the data came from one, or name one with --system)")
    return target
