"""Backend parity: the CUDA training kernels (ddm_numba.backends.cuda_loss: the low-rank loss and
the Gram passes) against their CPU twins (docs/model.md §4, §7), under the CUDA simulator.

Sizes are tiny (K = 40, N = 9, d = 2) because the simulator runs each GPU thread as a Python
thread; they still cover several blocks per reduction, several sample chunks, p = 0 and p = 2.
The simulator accepts code a real GPU compiler rejects: tests/test_cuda_lowering.py types and
lowers every kernel for sm_75 (simulator off).
"""
import functools

import numpy as np
import pytest

from ddm_numba.backends import cpu, cuda_loss
from ddm_numba.errors import DDMError

K, N, d, TAU = 40, 9, 2, 0.7
LOWRANK = ("A", "bz", "Bz", "MT", "c")
TOL = 1e-10


def arrays(p, seed):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((N, d))
    return dict(z=rng.uniform(-1.5, 1.5, (K, d)), u=rng.standard_normal((K, p)),
                f=rng.standard_normal((K, d)), lam=rng.uniform(0.5, 2.0, d),
                A=rng.standard_normal((d, N)) / 3, bz=rng.standard_normal(d),
                Bz=rng.standard_normal((d, p)), MT=np.ascontiguousarray(M.T),
                c=rng.standard_normal(N), Y=rng.standard_normal((K, 3)),
                W=rng.uniform(0.2, 3.0, (K, 3)))


def rel(got, ref):
    """max |got − ref| / max |ref| for every returned block (the loss is block 0)."""
    out = []
    for g, r in zip(got, ref):
        g, r = np.asarray(g, float), np.asarray(r, float)
        assert g.shape == r.shape, (g.shape, r.shape)
        out.append(float(np.max(np.abs(g - r)) / max(np.max(np.abs(r)), 1e-300)) if r.size else 0.0)
    return out


def same_bits(x, y):
    return all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(x, y))


def _host(a):
    return a["z"], a["u"], a["f"], a["lam"]


def _largs(a):
    return [a[k] for k in LOWRANK] + [TAU]


def _gram_args(a):
    return a["z"], a["u"], a["Y"], a["MT"], a["c"]


def _wargs(a):
    return a["z"], a["Y"], a["W"], a["MT"], a["c"]


@functools.lru_cache(maxsize=None)
def _lowrank(p):
    """(CPU, CUDA from host arrays) results of the low-rank loss for p inputs, computed once
    (the samples-on-device test compares against the same host-array result)."""
    a = arrays(p, seed=p)
    lref = cpu.lowrank_drift_loss_grad(cpu.drift_samples(*_host(a)), *_largs(a))
    lhost = cuda_loss.lowrank_drift_loss_grad(_host(a), *_largs(a))
    return lref, lhost


@pytest.mark.parametrize("p", [0, 2])
def test_lowrank_matches_cpu(p):
    """loss, ∂A, ∂b_z, ∂B_z, ∂Mᵀ, ∂c: each within 1e-10 of the CPU kernel's (relative)."""
    lref, lhost = _lowrank(p)
    r = rel(lhost, lref)
    assert len(r) == 6
    assert max(r) < TOL, r


@pytest.mark.parametrize("p", [0, 2])
def test_gram_statistics_match_cpu(p):
    """G, C, ψ̄ of the Gram pass (full mode, ridge decoders, learning from data): each within
    1e-10 of the CPU's (relative), in one chunk (several: the chunked test below)."""
    a = arrays(p, seed=p)
    r = rel(cuda_loss.gram_statistics(*_gram_args(a)), cpu.gram_statistics(*_gram_args(a)))
    assert len(r) == 3
    assert max(r) < TOL, r


def test_weighted_gram_statistics_match_cpu():
    """G_a (one per output) and C of the weighted pass: within 1e-10 of the CPU's."""
    a = arrays(2, seed=2)
    r = rel(cuda_loss.weighted_gram_statistics(*_wargs(a)),
            cpu.weighted_gram_statistics(*_wargs(a)))
    assert len(r) == 2
    assert max(r) < TOL, r


def test_gram_passes_in_several_chunks_match_cpu(monkeypatch):
    """The sums accumulate across sample chunks, in order: with scratch for 6 samples (p = 2),
    G, C, ψ̄ and the weighted G_a, C are still within 1e-10 of the CPU's."""
    p = 2
    a = arrays(p, seed=p)
    gref = cpu.gram_statistics(*_gram_args(a))
    wref = cpu.weighted_gram_statistics(*_wargs(a))
    monkeypatch.setattr(cuda_loss, "GRAM_SCRATCH_BYTES", 8 * 8 * (2 * (N + 1 + p) + 6))
    chunk = cuda_loss._GramPass(a["z"], a["u"], a["MT"], a["c"], 6).chunk
    assert -(-K // chunk) >= 2                    # several chunks were used
    gram = rel(cuda_loss.gram_statistics(*_gram_args(a)), gref)
    weighted = rel(cuda_loss.weighted_gram_statistics(*_wargs(a)), wref)
    assert len(gram) == 3
    assert max(gram) < TOL, gram
    assert len(weighted) == 2
    assert max(weighted) < TOL, weighted


def test_device_data_gives_the_same_bits_as_host_arrays():
    """Samples cached on the device: the same bits as host arrays, call after call (scratch
    reused)."""
    a = arrays(2, seed=2)
    lhost = _lowrank(2)[1]
    data = cuda_loss.drift_samples(*_host(a))
    dev = [cuda_loss.lowrank_drift_loss_grad(data, *_largs(a)) for _ in range(2)]
    assert same_bits(dev[0], lhost) and same_bits(dev[1], lhost)


@pytest.mark.parametrize("name", ["d", "p"])
def test_sizes_beyond_the_kernel_limits_are_refused(name):
    """Beyond the compile-time limits: a DDMError that points to the CPU backend."""
    dd, pp = {"d": (cuda_loss.MAX_D + 1, 0), "p": (1, cuda_loss.MAX_P + 1)}[name]
    with pytest.raises(DDMError) as exc:
        cuda_loss.drift_samples(np.zeros((4, dd)), np.zeros((4, pp)), np.zeros((4, dd)),
                                np.ones(dd))
    assert "MAX_" + name.upper() in str(exc.value)
    assert "CPU backend" in str(exc.value)
