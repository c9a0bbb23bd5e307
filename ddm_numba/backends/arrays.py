"""What a simulation kernel reads and writes, bundled once (docs/model.md §1, §6–7).

Every backend's ``simulate_network(net, run, paths)`` takes the same three named tuples, so a
call is written once, whatever the device:

    NetworkArrays  the network: its weights, its noise, its read-out (fixed for a model);
    RunSettings    this call: the input rows U, the step, how many steps, what to record;
    PathArrays     the state that a call advances and the records it writes.

Numba compiles named tuples as structs (njit and numba.cuda alike), so the kernels take these
tuples too and unpack them on entry, and their arguments stay few.
"""
from typing import NamedTuple

import numpy as np


class NetworkArrays(NamedTuple):
    """The network as the kernels see it. Low-rank (full = False): W φ = M (A φ), WT unused;
    full: W φ from Wᵀ, A unused (a (d, N) array of zeros keeps the types fixed)."""
    MT: np.ndarray        # (d, N) Mᵀ, the latent directions
    c: np.ndarray         # (N,) manifold offset
    A: np.ndarray         # (d, N) decoders (low-rank)
    WT: np.ndarray        # (N, N) Wᵀ (full) or (1, 1)
    full: bool
    b: np.ndarray         # (N,) bias
    BinT: np.ndarray      # (p, N) input weights B_inᵀ (p = 0: shape (0, N))
    S0: np.ndarray        # (d, m) constant part of the latent noise S(x)
    R: np.ndarray         # (d, m, N) state-dependent part, S(x) = S0 + Σ_j R[:, :, j] φ_j(x)
    has_R: bool           # R ≠ 0 (else the kernels skip S(x)'s sums)
    sigma_p: float        # private noise σ_p
    P: np.ndarray         # (d, N) read-out z = P (x − c)
    tau: float            # time constant τ

    @classmethod
    def of(cls, net):
        """The arrays of a ddm_numba.Network (read by attribute: no import of network.py)."""
        full = net.mode == "full"
        N, d, p = net.N, net.d, net.p
        return cls(np.ascontiguousarray(net.M.T), net.c,
                   net.A if not full else np.zeros((d, N)),
                   np.ascontiguousarray(net.W.T) if full else np.zeros((1, 1)), full, net.b,
                   np.ascontiguousarray(net.B_in.T) if p else np.zeros((0, N)),
                   net.S0, net.R, bool(np.any(net.R != 0)), float(net.sigma_private),
                   np.ascontiguousarray(net.P), float(net.tau))


class RunSettings(NamedTuple):
    """One call: n_steps Euler–Maruyama steps of dt, records every ``every`` steps."""
    U: np.ndarray         # (n_steps + 1, p) input u at each step (and the last record)
    dt: float
    n_steps: int
    every: int
    save_x: bool          # record x as well as z


class PathArrays(NamedTuple):
    """The state a call advances in place and the records it writes."""
    x: np.ndarray         # (trials, N) start states; left holding the final states
    states: np.ndarray    # (trials, 2) uint64 xoroshiro128+ states (rng.make_states), advanced
    z_out: np.ndarray     # (trials, n_steps // every + 1, d) records of z
    x_out: np.ndarray     # (trials, n_steps // every + 1, N) records of x if save_x, else (1, 1, 1)
    blowup: np.ndarray    # (trials,) int64: the first step at which z was not finite, else −1

    @classmethod
    def empty(cls, x, states, run, d):
        """Record arrays for ``run`` (z always, x if run.save_x), blowup all −1."""
        trials, N = x.shape
        T = run.n_steps // run.every + 1
        return cls(x, states, np.empty((trials, T, d)),
                   np.empty((trials, T, N)) if run.save_x else np.zeros((1, 1, 1)),
                   np.full(trials, -1, dtype=np.int64))
