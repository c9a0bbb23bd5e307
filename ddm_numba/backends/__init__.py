"""Backends: the same primitives (losses, Gram statistics, simulation) for each device
(docs/model.md §7, docs/architecture.md).

``cpu`` (numba njit) always; ``cuda`` (numba.cuda kernels: ``cuda_simulate``, ``cuda_loss``)
when numba-cuda is installed and a GPU is usable — or under the CUDA simulator
(NUMBA_ENABLE_CUDASIM=1), which the tests use to check the CUDA kernels without a GPU.

``select(device)`` is the one place where a device is chosen: it returns the backend module —
``backends.cpu`` or ``backends.cuda``, which define the functions of PRIMITIVES with the same
signatures — and a line saying why. Callers then write each call once:

    backend, why = select(device)
    G, C, mean = backend.gram_statistics(z, u, Y, MT, c)
"""
import importlib

import numba

from ..errors import DDMError

DEVICES = ("cpu", "cuda", "auto")
DEFAULT_DEVICE = "auto"       # API and CLI alike: a GPU when one is usable, else the CPU
PRIMITIVES = ("drift_samples", "lowrank_drift_loss_grad", "gram_statistics",
              "weighted_gram_statistics", "diffusion_loss_grad", "simulate_network")

INSTALL_HINT = ('install GPU support with  pip install "ddm_numba[cuda12]"  (CUDA 12 drivers) '
                'or  pip install "ddm_numba[cuda13]"')


def _cuda_module():
    try:
        from numba import cuda
    except Exception:    # numba without a CUDA target
        return None
    return cuda


def simulator_enabled():
    return bool(getattr(numba.config, "ENABLE_CUDASIM", 0))


def cuda_status():
    """(usable, reason): whether the CUDA backend can run here, and why not."""
    cuda = _cuda_module()
    if cuda is None:
        return False, "numba's CUDA target is not importable; " + INSTALL_HINT
    if simulator_enabled():
        return True, "the CUDA simulator (NUMBA_ENABLE_CUDASIM=1): correct but slow, for tests"
    try:
        import numba_cuda  # noqa: F401  (NVIDIA's numba-cuda: the maintained CUDA target)
    except ImportError:
        return False, "numba-cuda is not installed; " + INSTALL_HINT
    try:
        available = cuda.is_available()
    except Exception as exc:   # driver problems surface here
        return False, f"no usable GPU ({exc})"
    if not available:
        return False, "no usable GPU was found (cuda.is_available() is False)"
    return True, "a GPU: " + str(cuda.get_current_device().name)


def resolve_device(device):
    """'cpu' or 'cuda' for a requested device, and a line saying why.

    'auto' picks CUDA only for a real GPU: under the simulator cuda.is_available() is True, but the
    simulator is a testing tool thousands of times slower than the CPU backend, so 'auto' keeps
    to the CPU there. An explicit 'cuda' that cannot run raises DDMError saying what to install.
    """
    if device not in DEVICES:
        raise DDMError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu", "CPU (numba), as requested"
    usable, reason = cuda_status()
    if device == "cuda":
        if not usable:
            raise DDMError(f"--device cuda cannot run here: {reason}")
        return "cuda", f"CUDA on {reason}"
    if usable and not simulator_enabled():
        return "cuda", f"auto: CUDA on {reason}"
    return "cpu", f"auto: CPU (numba), because {reason if not usable else 'the only CUDA here is the simulator'}"


def select(device=DEFAULT_DEVICE):
    """(backend module, reason) for a requested device ("cpu", "cuda" or "auto"); see
    ``resolve_device``. The module is ``backends.cpu`` or ``backends.cuda``."""
    name, why = resolve_device(device)
    return importlib.import_module(f"{__name__}.{name}"), why


def get(device=DEFAULT_DEVICE):
    """The backend module for a device (``select`` without the reason)."""
    return select(device)[0]
