"""The kernel decorator and the activation function."""
import numba
import numpy as np
import pytest

from ddm_numba import _jit
from ddm_numba.backends import cpu
from ddm_numba.matching import DriftData, lowrank_loss_grad, lowrank_packer


def test_cache_falls_back_when_numba_cannot_cache(monkeypatch):
    """On a read-only install numba raises RuntimeError for cache=True at decoration time; the
    decorator must then compile without a cache instead of failing the import."""
    real = _jit.njit
    calls = []

    def njit(cache=False, **options):
        calls.append(cache)
        if cache:
            raise RuntimeError("cannot cache function 'f': no locator available for file 'x'")
        return real(cache=cache, **options)

    monkeypatch.setattr(_jit, "njit", njit)
    monkeypatch.setattr(_jit, "_CACHE_OK", None)

    @_jit.kernel()
    def twice(x):
        return 2.0 * x

    assert twice(3.0) == 6.0 and calls == [True, False]


def test_phi_is_tanh():
    x = np.concatenate([np.linspace(-30, 30, 20001), np.logspace(-300, 1.5, 500),
                        -np.logspace(-300, 1.5, 500), [0.0]])
    out = np.empty_like(x)

    @numba.njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = _jit.phi(x[i])
    apply(x, out)
    ref = np.tanh(x)
    assert np.all(np.abs(out - ref) <= 4e-15 * np.maximum(np.abs(ref), 1e-300))


def _apply(fn, x):
    out = np.empty_like(x)

    @numba.njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])
    apply(x, out)
    return out


def test_sampler_phi_is_tanh_to_its_stated_error():
    """φ̃ (``_jit.phi_em``, the sampler's activation) within PHI_EM_ERROR = 1.1e-6 of tanh on a
    grid of 4·10⁶ points over [−40, 40] (step 2e-5, finer than the rational's features: its
    error curve has 8 extrema on [0, 7]) and at every magnitude from 1e-300 up; relative error
    ≤ PHI_EM_REL_ERROR = 2e-6 (so it keeps tanh's relative accuracy near 0); odd; monotone; ±1 to PHI_EM_ERROR at
    ±inf. A wrong coefficient, a wrong clamp or an evaluation that loses precision moves the
    error by orders of magnitude, past the bound."""
    x = np.concatenate([np.linspace(-40, 40, 4_000_001), np.logspace(-300, 2, 2000),
                        -np.logspace(-300, 2, 2000), [0.0, np.inf, -np.inf, 1e300, -1e300]])
    got = _apply(_jit.phi_em, x)
    ref = np.tanh(x)
    assert np.max(np.abs(got - ref)) <= _jit.PHI_EM_ERROR
    nz = ref != 0
    assert np.max(np.abs(got[nz] / ref[nz] - 1)) <= _jit.PHI_EM_REL_ERROR
    assert _apply(_jit.phi_em, np.array([0.0]))[0] == 0.0
    assert np.isnan(_apply(_jit.phi_em, np.array([np.nan]))[0])    # not read as saturated
    grid = np.linspace(0, 40, 4_000_001)
    pos, neg = _apply(_jit.phi_em, grid), _apply(_jit.phi_em, -grid)
    assert np.array_equal(pos, -neg)                       # odd
    assert np.all(np.diff(pos) >= 0)                       # monotone
    # and not tanh to 5e-16: this is a different function from phi, as documented
    assert np.max(np.abs(got - ref)) > 1e-12


@pytest.mark.slow
def test_sampler_phi_coefficients_are_the_script_s():
    """docs/phi_rational.py fits the coefficients; _jit carries them. Refitting must give the
    same error (the fit is deterministic), so the script and the code cannot drift apart.
    (12 s of least squares: in the full run.)"""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "docs" / "phi_rational.py"
    spec = importlib.util.spec_from_file_location("phi_rational", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    p, q, err = mod.fit()
    carried = np.array(_jit.PHI_EM_P + _jit.PHI_EM_Q)
    np.testing.assert_allclose(np.r_[p[1:], q[1:]], carried, rtol=1e-6)   # lstsq rounding may differ by machine; the bound is the test above
    assert err <= _jit.PHI_EM_ERROR


def test_loss_bits_do_not_depend_on_thread_count():
    rng = np.random.default_rng(0)
    K, N, d = 1000, 40, 2
    data = DriftData(rng.standard_normal((K, d)), np.zeros((K, 0)), rng.standard_normal((K, d)),
                     np.ones(d), 1.0)
    packer = lowrank_packer(N, d, 0)
    x = rng.standard_normal(packer.size)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = lowrank_loss_grad(x, packer, data, 0.0)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = lowrank_loss_grad(x, packer, data, 0.0)
    finally:
        numba.set_num_threads(before)
    assert one[0] == many[0] and np.array_equal(one[1], many[1])
    assert cpu.BLOCK < K  # several blocks, so the reduction order is exercised


def test_powers_of_two_are_exact():
    """φ's 2ⁿ: the exponent-writing intrinsic (CPU) and the binary-digit product (GPU builds)."""
    @numba.njit
    def both(n):
        return _jit._exp2_int(n), _jit.exp2_int(n)

    for n in range(64):
        a, b = both(float(n))
        assert a == b == 2.0 ** n, n


def test_phi_gpu_form_equals_cpu_form():
    """The GPU builds of φ rebind ``_exp2_int`` and ``_floor`` to plain arithmetic; compiled that
    way on the CPU it gives the same values as the CPU form (the same formula, the same 2ⁿ)."""
    import math
    import types

    py = _jit.phi.py_func
    namespace = dict(py.__globals__, _exp2_int=_jit.exp2_int,
                     _floor=numba.njit(lambda y: float(math.floor(y))))
    gpu_form = numba.njit(types.FunctionType(py.__code__, namespace, "phi_gpu_form"))
    x = np.concatenate([np.linspace(-30, 30, 4001), np.logspace(-300, 1.5, 200)])

    @numba.njit
    def apply(f, x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = f(x[i])
        return out
    cpu_vals = apply(_jit.phi, x)
    gpu_vals = apply(gpu_form, x)
    # the same formula; FMA contraction may differ by an ulp or two (measured: one point, 2.6e-16)
    assert np.all(np.abs(cpu_vals - gpu_vals) <= 4.5e-16 * np.maximum(np.abs(cpu_vals), 1e-300))
