"""Quick start through the Python API: fit a network to a built-in system, sample network and
target with the same seed, and write a figure and the figures of merit.

    python examples/quickstart.py [SYSTEM] [--neurons N] [--out-dir DIR]
"""
import argparse
import json
import os

import numpy as np

from ddm_numba import fit, get_system, sample_network, sample_target
from ddm_numba.plotting import plot_comparison


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("system", nargs="?", default="ring_wells")
    ap.add_argument("--neurons", type=int, default=256)
    ap.add_argument("--out-dir", default=".")
    args = ap.parse_args()
    system = get_system(args.system)
    net = fit(system, args.neurons, seed=0)
    time = min(system.duration, 100.0)
    net_traj = sample_network(net, trials=100, time=time, seed=1)
    tgt_traj = sample_target(system, trials=100, time=time, seed=1)
    burn = 0.1 * time
    zs_net, zs_tgt = net_traj.stationary(burn), tgt_traj.stationary(burn)
    merit = {"system": system.name, "neurons": net.N, **net.meta["fit"],
             "mean_network": zs_net.mean(0).tolist(), "mean_target": zs_tgt.mean(0).tolist(),
             "cov_network": np.cov(zs_net.T).tolist(), "cov_target": np.cov(zs_tgt.T).tolist()}
    os.makedirs(args.out_dir, exist_ok=True)
    png = os.path.join(args.out_dir, f"{system.name}.png")
    plot_comparison(png, [("network", net_traj), ("target", tgt_traj)], burn,
                    title=f"{system.name}: N={net.N} network vs target")
    with open(os.path.join(args.out_dir, f"{system.name}.json"), "w") as fh:
        json.dump(merit, fh, indent=1)
    print(json.dumps(merit, indent=1))
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
