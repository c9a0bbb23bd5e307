"""Backend parity: the CUDA training kernels (ddm_numba.backends.cuda_loss: the low-rank loss and
the Gram passes) against their CPU twins (docs/model.md §4, §7), without a GPU.

The CUDA side runs under the CUDA simulator, which must be switched on (NUMBA_ENABLE_CUDASIM=1)
before numba is first imported — and this pytest process has imported numba already. So one
subprocess with the simulator on computes every case (CPU and CUDA side by side) and writes the
relative differences as JSON; the tests below assert on them. Sizes are tiny (K = 40, N = 9,
d = 2) because the simulator runs each GPU thread as a Python thread; they still cover several
blocks per reduction, several sample chunks, p = 0 and p = 2.

The simulator accepts code a real GPU compiler rejects, so a second subprocess (simulator off)
types and lowers every kernel for sm_75 with numba-cuda (the simulation kernel of cuda_simulate
too, with its named-tuple arguments), and emits PTX where NVVM is installed.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-10

# the CUDA simulator runs a thread-step in ~1 ms: these parity checks (40–70 s with their
# subprocess) are in the full run (`pytest -m slow`, which .ci/run runs) to keep `pytest` < 5 min
pytestmark = [pytest.mark.skipif(importlib.util.find_spec("numba.cuda") is None,
                                 reason="numba's CUDA target is not installed"),
              pytest.mark.slow]

PARITY = r'''
import json, sys
import numpy as np
from ddm_numba.backends import cpu, cuda_loss
from ddm_numba.errors import DDMError

K, N, d, TAU = 40, 9, 2, 0.7
LOWRANK = ("A", "bz", "Bz", "MT", "c")


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
    # max |got − ref| / max |ref| for every returned block (the loss is block 0)
    out = []
    for g, r in zip(got, ref):
        g, r = np.asarray(g, float), np.asarray(r, float)
        assert g.shape == r.shape, (g.shape, r.shape)
        out.append(float(np.max(np.abs(g - r)) / max(np.max(np.abs(r)), 1e-300)) if r.size else 0.0)
    return out


def same_bits(x, y):
    return all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(x, y))


res = {}
for p in (0, 2):
    a = arrays(p, seed=p)
    host = (a["z"], a["u"], a["f"], a["lam"])
    largs = [a[k] for k in LOWRANK] + [TAU]
    lref = cpu.lowrank_drift_loss_grad(cpu.drift_samples(*host), *largs)
    lhost = cuda_loss.lowrank_drift_loss_grad(host, *largs)
    res[f"lowrank_p{p}"] = rel(lhost, lref)
    gram_args = (a["z"], a["u"], a["Y"], a["MT"], a["c"])
    gref = cpu.gram_statistics(*gram_args)
    res[f"gram_p{p}"] = rel(cuda_loss.gram_statistics(*gram_args), gref)

# from here on: the p = 2 case left by the loop
wargs = (a["z"], a["Y"], a["W"], a["MT"], a["c"])
wref = cpu.weighted_gram_statistics(*wargs)
res["weighted_gram"] = rel(cuda_loss.weighted_gram_statistics(*wargs), wref)
# several sample chunks (the sums accumulate across them, in order)
default_bytes = cuda_loss.GRAM_SCRATCH_BYTES
cuda_loss.GRAM_SCRATCH_BYTES = 8 * 8 * (2 * (N + 1 + p) + 6)
res["gram_chunk"] = cuda_loss._GramPass(a["z"], a["u"], a["MT"], a["c"], 6).chunk
res["gram_p2_chunked"] = rel(cuda_loss.gram_statistics(*gram_args), gref)
res["weighted_gram_chunked"] = rel(cuda_loss.weighted_gram_statistics(*wargs), wref)
cuda_loss.GRAM_SCRATCH_BYTES = default_bytes

# samples cached on the device: the same bits as host arrays, call after call (scratch reused)
data = cuda_loss.drift_samples(*host)
dev = [cuda_loss.lowrank_drift_loss_grad(data, *largs) for _ in range(2)]
res["lowrank_device_data_same_bits"] = same_bits(dev[0], lhost) and same_bits(dev[1], lhost)

# beyond the compile-time limits: a DDMError that points to the CPU backend
for name, (dd, pp) in {"d": (cuda_loss.MAX_D + 1, 0), "p": (1, cuda_loss.MAX_P + 1)}.items():
    try:
        cuda_loss.drift_samples(np.zeros((4, dd)), np.zeros((4, pp)), np.zeros((4, dd)),
                                np.ones(dd))
        res[f"limit_{name}"] = "no error"
    except DDMError as exc:
        res[f"limit_{name}"] = str(exc)

with open(sys.argv[1], "w") as fh:
    json.dump(res, fh)
'''

COMPILE = r'''
"""Type and lower every kernel for sm_75 with numba-cuda (no GPU, no simulator); emit PTX when
NVVM/NVRTC is installed. Prints a JSON {kernel: "ptx" | "lowered" | "error: ..."}."""
import json
from numba import float64, int64, boolean
from numba.types import Array, void
try:
    import numba.cuda.dispatcher as dispatcher
    from numba.cuda.compiler import compile_cuda
except ImportError as exc:
    print(json.dumps({"skip": f"numba-cuda internals not as expected: {exc}"}))
    raise SystemExit


class Sm75:  # device functions ask the driver for the current device's compute capability
    compute_capability = (7, 5)


dispatcher.get_current_device = lambda: Sm75()
from ddm_numba.backends import cuda_loss as cl

C1, C2, A2 = Array(float64, 1, "C"), Array(float64, 2, "C"), Array(float64, 2, "A")
SIGS = {
    "_lowrank_residual": (C2, C2, C2, C1, A2, A2.copy(ndim=1), A2, A2, A2.copy(ndim=1), float64,
                          int64, C2, C2),
    "_lowrank_neuron_grad": (C2, C2, A2, A2, A2.copy(ndim=1), int64, C2),
    "_sum_rows": (C2, C1, int64),
    "_features": (C2, C2, C2, C1, int64, int64, A2),
    "_weighted_rows": (A2, C2, int64, int64, A2),
    "_gemm_tn": (A2, A2, A2, boolean),
}
KERNELS = {name: (getattr(cl, name), sig) for name, sig in SIGS.items()}
# the simulation kernel takes backends.arrays' named tuples: their types from host stand-ins
import numpy as np
from numba import typeof
from ddm_numba.backends import cuda_simulate as cs
from ddm_numba.backends.arrays import NetworkArrays, PathArrays, RunSettings
N, d, m, p, T = 6, 2, 2, 1, 3
for precision in ("float64", "float32"):
    real = np.dtype(precision).type

    def z(*shape):
        return np.zeros(shape, precision)
    work = (np.zeros((1, 3, 2), np.uint64), z(1, N), z(1, N), z(1, N), p, m, real(0.1))
    net = NetworkArrays(z(d, N), z(N), z(d, N), z(1, 1), False, z(N), z(p, N), z(d, m),
                        z(d, m, N), True, real(0.1), z(d, N), real(1.0))
    run = RunSettings(z(T, p), real(0.01), 4, 2, True)
    paths = PathArrays(z(1, N), np.zeros((1, 2), np.uint64), z(1, T, d), z(1, T, N),
                       np.zeros(1, np.int64))
    KERNELS[f"simulate_{precision}"] = (cs._kernel(32, precision),
                                        tuple(typeof(a) for a in (work, net, run, paths)))
out = {}
for name, (func, sig) in KERNELS.items():
    try:
        cres = compile_cuda(func.py_func, void, sig, cc=(7, 5), nvvm_options={"opt": 3})
    except Exception as exc:  # typing or lowering: code a real GPU compiler would reject
        out[name] = f"error: {type(exc).__name__}: {str(exc)[:500]}"
        continue
    try:
        cres.library.get_asm_str(cc=(7, 5))
        out[name] = "ptx"
    except Exception:  # no NVVM here (libnvrtc / libnvvm not installed)
        out[name] = "lowered"
print(json.dumps(out))
'''


def _env(simulator):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    else:
        env.pop("NUMBA_ENABLE_CUDASIM", None)
    return env


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda_loss") / "parity.json"
    proc = subprocess.run([sys.executable, "-c", PARITY, str(out)], env=_env(True),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", ["lowrank_p0", "lowrank_p2"])
def test_lowrank_matches_cpu(parity, case):
    """loss, ∂A, ∂b_z, ∂B_z, ∂Mᵀ, ∂c: each within 1e-10 of the CPU kernel's (relative)."""
    assert len(parity[case]) == 6
    assert max(parity[case]) < TOL, parity[case]


@pytest.mark.parametrize("case", ["gram_p0", "gram_p2", "gram_p2_chunked"])
def test_gram_statistics_match_cpu(parity, case):
    """G, C, ψ̄ of the Gram pass (full mode, ridge decoders, learning from data): each within
    1e-10 of the CPU's (relative), in one chunk and in several."""
    assert len(parity[case]) == 3
    assert max(parity[case]) < TOL, parity[case]


@pytest.mark.parametrize("case", ["weighted_gram", "weighted_gram_chunked"])
def test_weighted_gram_statistics_match_cpu(parity, case):
    """G_a (one per output) and C of the weighted pass: within 1e-10 of the CPU's."""
    assert len(parity[case]) == 2
    assert max(parity[case]) < TOL, parity[case]


def test_gram_several_chunks_were_used(parity):
    assert -(-40 // parity["gram_chunk"]) >= 2


def test_device_data_gives_the_same_bits_as_host_arrays(parity):
    assert parity["lowrank_device_data_same_bits"]


@pytest.mark.parametrize("name", ["d", "p"])
def test_sizes_beyond_the_kernel_limits_are_refused(parity, name):
    assert "MAX_" + name.upper() in parity[f"limit_{name}"]
    assert "CPU backend" in parity[f"limit_{name}"]


def test_kernels_compile_for_a_gpu():
    """Every kernel types and lowers for sm_75 (constant-size local/shared arrays, no allocation):
    the simulator alone would not catch code that a GPU compiler rejects."""
    proc = subprocess.run([sys.executable, "-c", COMPILE], env=_env(False), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    bad = {k: v for k, v in result.items() if v not in ("ptx", "lowered")}
    assert not bad, bad
    assert len(result) == 8 and {"simulate_float64", "simulate_float32"} <= set(result)
