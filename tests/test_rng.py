"""The per-trial random streams: the generator of numba.cuda, reproducible, and normal."""
import math

import numpy as np
from numba.cuda.random import (init_xoroshiro128p_states_cpu, xoroshiro128p_dtype,
                               xoroshiro128p_next)

from ddm_numba.rng import fill_normals, make_states, next_uint64


def test_streams_equal_numba_cuda():
    ours = make_states(7, 2024)
    ref = np.empty(7, dtype=xoroshiro128p_dtype)
    init_xoroshiro128p_states_cpu(ref, 2024, 0)
    assert np.array_equal(ours[:, 0], ref["s0"]) and np.array_equal(ours[:, 1], ref["s1"])
    for i in (0, 6):
        for _ in range(5):
            assert int(next_uint64(ours, i)) == int(xoroshiro128p_next(ref, i))


def test_normals_moments_and_independence():
    # 4 streams × 50 000 draws: sample mean has standard error 1/sqrt(n); variance estimate has
    # standard error sqrt(2/n); correlation between streams, 1/sqrt(n). We allow 5 standard errors.
    n = 50_000
    out = np.empty((4, n))
    fill_normals(make_states(4, 1), out)
    se = 1 / math.sqrt(n)
    assert np.all(np.abs(out.mean(axis=1)) < 5 * se)
    assert np.all(np.abs(out.var(axis=1) - 1) < 5 * math.sqrt(2) * se)
    corr = np.corrcoef(out)[np.triu_indices(4, 1)]
    assert np.all(np.abs(corr) < 5 * se)
    # fourth moment of a normal is 3 (standard error sqrt(96/n))
    assert np.all(np.abs((out ** 4).mean(axis=1) - 3) < 5 * math.sqrt(96 / n))


def test_same_seed_same_numbers_odd_width():
    a, b = np.empty((3, 5)), np.empty((3, 5))
    fill_normals(make_states(3, 9), a)
    fill_normals(make_states(3, 9), b)
    assert np.array_equal(a, b)
    c = np.empty((3, 5))
    fill_normals(make_states(3, 10), c)
    assert not np.array_equal(a, c)


def test_streams_from_a_first_index_are_the_rows_of_one_run():
    """make_states(b − a, seed, a) == make_states(b, seed)[a:]: trial i's stream does not depend
    on where the streams were made (issue 14's shards), for a = 0, 1 and one past an odd count."""
    whole = make_states(23, 5)
    for a, b in [(0, 23), (1, 4), (17, 23)]:
        assert np.array_equal(make_states(b - a, 5, a), whole[a:b])
