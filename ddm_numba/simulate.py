"""Sampling (DESIGN.md §6): Euler–Maruyama for the network (N dims) and for the target (d dims).

Both use one xoroshiro128+ stream per trial (rng.py), so a run is the same whatever the thread
count, and with the same seed the network and the target see the same latent noise ξ (when the
network has no private noise): their paths can be compared trial by trial.
"""
import functools
import json
import os

import numpy as np

from . import __version__
from .backends import cpu, resolve_device
from .errors import DDMError
from .network import Network, atomic_savez, read_npz
from .rng import fill_normals, make_states
from .systems import get_system

TRAJ_FORMAT = "ddm_numba.trajectories/1"
MAX_RECORD_BYTES = 4 * 2**30


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


def input_array(schedule, p, n_steps, dt):
    """Per-step inputs U (n_steps, p) of a piecewise-constant schedule [(t0, t1, u), ...].

    Step s uses u(t_s), t_s = s·dt; intervals are half-open [t0, t1) and may not overlap.
    """
    U = np.zeros((n_steps, p))
    covered = np.zeros(n_steps, dtype=bool)
    t = np.arange(n_steps) * dt
    for t0, t1, u in schedule:
        active = (t >= t0 - 1e-12 * dt) & (t < t1 - 1e-12 * dt)
        if np.any(covered & active):
            raise DDMError(f"input intervals overlap near t = {t[covered & active][0]:g}")
        covered |= active
        U[active] = u
    return U


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
        t, z = arrays["t"], arrays["z"]
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
        meta = json.loads(str(arrays.get("meta", "{}")))
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


def _steps(time, dt, record_every):
    if not (time > 0 and dt > 0):
        raise DDMError(f"time and dt must be > 0 (got time={time}, dt={dt})")
    n_steps = int(round(time / dt))
    if n_steps < 1:
        raise DDMError(f"time {time} is shorter than one step dt = {dt}")
    every = int(record_every) if record_every else max(1, int(round(0.05 / dt)))
    if every < 1:
        raise DDMError(f"record_every must be >= 1, got {record_every}")
    n_steps = (n_steps // every) * every or every
    return n_steps, every


def _initial_latent(z0, trials, d, domain, seed):
    if z0 is None:
        rng = np.random.default_rng([seed, 0x5EED])
        lo, hi = domain[:, 0], domain[:, 1]
        return lo + (hi - lo) * rng.random((trials, d))
    z0 = np.asarray(z0, dtype=float)
    if z0.shape == (d,):
        return np.tile(z0, (trials, 1))
    if z0.shape != (trials, d):
        raise DDMError(f"z0 must have shape ({d},) or ({trials}, {d}), got {z0.shape}")
    return z0.copy()


def _check_blowup(blowup, dt, what):
    bad = np.flatnonzero(blowup >= 0)
    if bad.size:
        tr = int(bad[0])
        raise DDMError(f"{what}: trial {tr} became non-finite at t = {blowup[tr] * dt:g} "
                       f"({bad.size} trial(s) in all); try a smaller --dt")


def _common_meta(kind, seed, dt, every, schedule):
    return {"kind": kind, "seed": seed, "dt": dt, "record_every": every,
            "inputs": [[t0, t1, list(map(float, u))] for t0, t1, u in schedule],
            "version": __version__}


def sample_network(net, trials=100, time=100.0, seed=0, dt=None, record_every=None,
                   inputs=(), save_neurons=False, z0=None, device="cpu", dtype="float64"):
    """Simulate the network from x0 = M z0 + c; returns Trajectories of z = P (x − c).

    device: "cpu", "cuda" or "auto" (CUDA when a GPU is usable); the same seed gives the same
    paths on either, up to rounding. dtype: "float64", or "float32" on CUDA.
    """
    if isinstance(net, (str, os.PathLike)):
        net = Network.load(net)
    device, why = resolve_device(device)
    if dtype not in ("float64", "float32"):
        raise DDMError(f"dtype must be float64 or float32, got {dtype!r}")
    if dtype == "float32" and device != "cuda":
        raise DDMError("float32 sampling is for the CUDA backend; the CPU backend computes in "
                       "float64 (leave --dtype at float64 or use --device cuda)")
    trials = int(trials)
    if trials < 1:
        raise DDMError(f"trials must be >= 1, got {trials}")
    sysmeta = net.meta.get("system", {})
    dt = float(dt if dt else sysmeta.get("dt", 0.01))
    n_steps, every = _steps(time, dt, record_every)
    T = n_steps // every + 1
    N, d, p = net.N, net.d, net.p
    bytes_x = trials * T * N * 8 if save_neurons else 0
    if bytes_x + trials * T * d * 8 > MAX_RECORD_BYTES:
        raise DDMError(f"recording would take {(bytes_x + trials * T * d * 8) / 2**30:.1f} GiB; "
                       "record less often (--record-every) or fewer trials")
    schedule = [parse_input(s, p) if isinstance(s, str) else s for s in inputs]
    U = input_array(schedule, p, n_steps + 1, dt)  # one row per step and the last record
    domain = np.asarray(sysmeta.get("domain", [[-1.0, 1.0]] * d), dtype=float)
    z_init = _initial_latent(z0, trials, d, domain, seed)
    x0 = np.ascontiguousarray(net.embed(z_init))
    states = make_states(trials, seed)
    z_out = np.zeros((trials, T, d))
    x_out = np.zeros((trials, T, N) if save_neurons else (1, 1, 1))
    blowup = np.full(trials, -1, dtype=np.int64)
    full = net.mode == "full"
    if device == "cuda":
        from .backends import cuda_simulate
        kernel = functools.partial(cuda_simulate.simulate_network, dtype=np.dtype(dtype).type)
    else:
        kernel = cpu.simulate_network
    kernel(
        x0, states, np.ascontiguousarray(net.M.T), net.c,
        net.A if not full else np.zeros((d, N)), np.ascontiguousarray(net.W.T) if full
        else np.zeros((1, 1)), full, net.b,
        np.ascontiguousarray(net.B_in.T) if p else np.zeros((0, N)), U, net.S0, net.R,
        bool(np.any(net.R != 0)), net.sigma_private, np.ascontiguousarray(net.P), dt, net.tau,
        n_steps, every, z_out, x_out, bool(save_neurons), blowup)
    _check_blowup(blowup, dt, "network")
    meta = _common_meta("network", seed, dt, every, schedule)
    meta.update({"system": sysmeta, "N": N, "mode": net.mode, "device": device,
                 "device_reason": why, "dtype": dtype})
    return Trajectories(np.arange(T) * every * dt, z_out, x_out if save_neurons else None,
                        U[::every] if p else None, meta)


def sample_target(system, trials=100, time=100.0, seed=0, dt=None, record_every=None,
                  inputs=(), z0=None):
    """Simulate the target SDE itself (same seeds, same noise draws as sample_network)."""
    system = get_system(system)
    trials = int(trials)
    if trials < 1:
        raise DDMError(f"trials must be >= 1, got {trials}")
    dt = float(dt if dt else system.dt)
    n_steps, every = _steps(time, dt, record_every)
    T = n_steps // every + 1
    d, m, p = system.d, system.m, system.p
    schedule = [parse_input(s, p) if isinstance(s, str) else s for s in inputs]
    U = input_array(schedule, p, n_steps + 1, dt)  # one row per step and the last record
    z = _initial_latent(z0, trials, d, system.domain, seed)
    states = make_states(trials, seed)
    xi = np.empty((trials, m))
    z_out = np.zeros((trials, T, d))
    alive = np.ones(trials, dtype=bool)
    blowup = np.full(trials, -1, dtype=np.int64)
    sqdt = np.sqrt(dt)
    for step in range(n_steps + 1):
        if step % every == 0:
            z_out[:, step // every] = z
            bad = alive & ~np.isfinite(z).all(axis=1)
            if bad.any():
                blowup[bad] = step
                _check_blowup(blowup, dt, f"target {system.name}")
        if step == n_steps:
            break
        u = np.broadcast_to(U[step], (trials, p)) if p else None
        with np.errstate(all="ignore"):
            f = np.asarray(system.drift(z, u), dtype=float)
            g = np.asarray(system.diffusion(z), dtype=float)
        if f.shape != (trials, d) or g.shape != (trials, d, m):
            raise DDMError(f"system {system.name!r}: drift/diffusion returned shapes {f.shape}, "
                           f"{g.shape}; expected {(trials, d)}, {(trials, d, m)}")
        fill_normals(states, xi)
        with np.errstate(all="ignore"):
            z = z + f * dt + np.einsum("kam,km->ka", g, xi) * sqdt
    meta = _common_meta("target", seed, dt, every, schedule)
    meta["system"] = {"name": system.name, "spec": getattr(system, "spec", system.name),
                      "params": system.params, "d": d, "m": m, "p": p}
    return Trajectories(np.arange(T) * every * dt, z_out, None, U[::every] if p else None,
                        meta)


def target_of(net):
    """The target system a model was fitted to (from its metadata)."""
    sysmeta = net.meta.get("system")
    if not sysmeta:
        raise DDMError("this model's metadata names no target system")
    if sysmeta.get("kind") == "data":
        raise DDMError("this model was fitted to data with no known system behind it, so it "
                       "has no target SDE to sample or compare with (fit with --truth SYSTEM "
                       "if the data came from one)")
    return get_system(sysmeta.get("spec", sysmeta["name"]), **sysmeta.get("params", {}))
