"""xoroshiro128+ random streams, one per trial, bit-identical to ``numba.cuda.random``.

Reproducibility whatever the thread count needs one independent stream per trial; CPU/GPU
agreement needs the same generator on both sides. We use the algorithm of numba.cuda.random
(Blackman & Vigna's xoroshiro128+, seeded by splitmix64, trial i's stream = trial 0's stream
jumped i * 2^64 steps), stored as a (trials, 2) uint64 array [s0, s1] instead of a structured
dtype so that plain njit kernels can use it. ``tests/test_rng.py`` checks the streams against
numba.cuda.random itself.

Normals: numba.cuda's own normal draws a float32 uniform u1 and takes log(u1), which is -inf with
probability 2^-24 per draw: a long simulation would meet one. ``normal_pair`` uses two float64
uniforms and log(1 - u1), with 1 - u1 in (0, 1], and returns both Box–Muller values.
"""
import math

import numpy as np
from numba import uint32, uint64

from ._jit import kernel
from .errors import DDMError


@kernel(inline="always")
def _rotl(x, k):
    return (x << uint32(k)) | (x >> uint32(64 - k))


@kernel(inline="always")
def next_uint64(states, i):
    """Return the next uint64 of stream i and advance it (xoroshiro128+)."""
    s0 = states[i, 0]
    s1 = states[i, 1]
    result = s0 + s1
    s1 ^= s0
    states[i, 0] = _rotl(s0, 55) ^ s1 ^ (s1 << uint32(14))
    states[i, 1] = _rotl(s1, 36)
    return result


@kernel(inline="always")
def uniform(states, i):
    """A float64 in [0, 1) from the top 53 bits of the next draw."""
    return float(next_uint64(states, i) >> uint32(11)) * (1.0 / 9007199254740992.0)


@kernel(inline="always")
def normal_pair(states, i):
    """Two independent standard normals (Box–Muller on two float64 uniforms)."""
    u1 = 1.0 - uniform(states, i)  # in (0, 1]: log is finite
    u2 = uniform(states, i)
    radius = math.sqrt(-2.0 * math.log(u1))
    angle = 2.0 * math.pi * u2
    return radius * math.cos(angle), radius * math.sin(angle)


@kernel()
def _jump(states, i):
    """Advance stream i by 2^64 steps (the xoroshiro128+ jump polynomial)."""
    jump = (uint64(0xBEAC0467EBA5FACB), uint64(0xD86B048B86AA9922))
    s0 = uint64(0)
    s1 = uint64(0)
    for w in range(2):
        for b in range(64):
            if jump[w] & (uint64(1) << uint32(b)):
                s0 ^= states[i, 0]
                s1 ^= states[i, 1]
            next_uint64(states, i)
    states[i, 0] = s0
    states[i, 1] = s1


@kernel()
def _init_states(states, seed, first):
    """states[k] = stream first + k of this seed: stream 0 from splitmix64(seed), each next one
    the last jumped 2^64 steps (``first`` jumps to reach the first, O(first))."""
    z = uint64(seed) + uint64(0x9E3779B97F4A7C15)  # splitmix64
    z = (z ^ (z >> uint32(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint32(27))) * uint64(0x94D049BB133111EB)
    z = z ^ (z >> uint32(31))
    states[0, 0] = z
    states[0, 1] = z
    for _ in range(first):
        _jump(states, 0)
    for i in range(1, states.shape[0]):
        states[i, 0] = states[i - 1, 0]
        states[i, 1] = states[i - 1, 1]
        _jump(states, i)


def make_states(n_streams, seed, first=0):
    """(n_streams, 2) uint64 states: row k is the generator of trial first + k for this seed, so
    the streams of trials [a, b) are the same wherever they are made (make_states(b − a, seed,
    a) == make_states(b, seed)[a:]): a run can be split into shards of trials."""
    if not 0 <= int(seed) < 2**63:
        raise DDMError(f"seed must be an integer in [0, 2^63), got {seed}")
    if not 0 <= int(first) < 2**62:
        raise DDMError(f"the first trial index must be an integer >= 0, got {first}")
    states = np.zeros((int(n_streams), 2), dtype=np.uint64)
    if n_streams > 0:
        _init_states(states, np.uint64(seed), np.int64(first))
    return states


@kernel()
def fill_uniforms(states, out):
    """out[i, :] <- uniforms in [0, 1) from stream i, in order (stream i advanced by out's
    width)."""
    n, m = out.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = uniform(states, i)


@kernel()
def fill_normals(states, out):
    """out[i, :] <- standard normals from stream i (pairs; an odd tail drops its second value)."""
    n, m = out.shape
    for i in range(n):
        j = 0
        while j < m:
            a, b = normal_pair(states, i)
            out[i, j] = a
            if j + 1 < m:
                out[i, j + 1] = b
            j += 2
