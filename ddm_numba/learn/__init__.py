"""Learning a network from observed trajectories, when no equations are known.

    data.py       Observations: validated trajectories, segments, pairs, the held-out split
    fit.py        fit_data: increment matching, adjoint refinement, diffusion from residuals
    multistep.py  the RK4 shooting loss and its discrete-adjoint gradient

The training pieces shared with ``fit`` (ridge solves, block scaling, L-BFGS-B) are in
ddm_numba.training.
"""
from .data import Observations, load_observations
from .fit import fit_data

__all__ = ["Observations", "load_observations", "fit_data"]
