"""The CUDA backend: the functions of ``backends.cpu`` under the same names and signatures
(``backends.PRIMITIVES``), run on a GPU through numba.cuda. ``backends.get("cuda")`` returns this
module; nothing else in the package chooses between the two.

    drift_samples, lowrank_drift_loss_grad      cuda_loss (the samples stay on the GPU)
    gram_statistics, weighted_gram_statistics   cuda_loss (tiled GEMMs over chunks of samples)
    simulate_network                            cuda_simulate (a thread block per trial)
    diffusion_loss_grad                         the CPU kernel, on the host

The diffusion loss is not ported: it is evaluated on at most a few 10⁴ samples (the diffusion
stage's subset) and costs O(K N d m) a call, less than the transfers of a GPU call would.
"""
from .cpu import diffusion_loss_grad
from .cuda_loss import (drift_samples, gram_statistics, lowrank_drift_loss_grad,
                        weighted_gram_statistics)
from .cuda_simulate import simulate_network

NAME = "cuda"

__all__ = ["NAME", "diffusion_loss_grad", "drift_samples", "gram_statistics",
           "lowrank_drift_loss_grad", "simulate_network", "weighted_gram_statistics"]
