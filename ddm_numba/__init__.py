"""ddm_numba: rate RNNs that *are* a given stochastic dynamical system (drift-diffusion matching).

    from ddm_numba import get_system, fit, sample_network, sample_target, load_model, analyze
    net = fit("double_well", neurons=256, seed=0)
    net.save("dw.npz")
    traj = sample_network(net, trials=200, time=200, seed=1)
    report = analyze(net, "dw_analysis")     # what `ddm analyze` computes: report.json, figures
"""
from ._version import __version__
from .errors import DDMError
from .systems import System, get_system, list_systems
from .network import Network, load_model
from .matching import fit
from .simulate import Trajectories, sample_network, sample_pair, sample_target
from .learn import fit_data
from .analysis.report import analyze

__all__ = ["DDMError", "System", "get_system", "list_systems", "Network", "load_model", "fit",
           "fit_data", "Trajectories", "sample_network", "sample_pair", "sample_target",
           "analyze", "__version__"]
