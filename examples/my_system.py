"""Your own system: a stochastic Van der Pol oscillator, the file to copy for a new target SDE.

    dz1 = z2 dt
    dz2 = (mu (1 - z1^2) z2 - z1) dt + sigma dB          (one noise source: g is (K, 2, 1))

Fit and sample it from the command line:

    ddm fit examples/my_system.py:VanDerPol --neurons 256 --out vdp.npz
    ddm sample vdp.npz --out vdp_traj.npz --plot vdp.png --system examples/my_system.py:VanDerPol

or run this file, which runs those commands (plus `ddm sample --target` with the same seed and a
small `ddm analyze`) through subprocess and writes the figures of merit as JSON and a figure:

    python examples/my_system.py [--out-dir DIR] [--quick]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time as _time

import numpy as np

from ddm_numba import System


class VanDerPol(System):
    """Stochastic Van der Pol oscillator; noise enters the velocity only (D = diag(0, sigma^2))."""

    name, d, m = "van_der_pol", 2, 1
    # the deterministic limit cycle (mu = 1) reaches |z1| ~ 2.0, |z2| ~ 2.7; the box holds it
    # with a margin, so training points cover everything the sampled paths visit
    domain = [[-3.0, 3.0], [-4.0, 4.0]]
    dt, duration = 0.01, 100.0
    params = {"mu": 1.0, "sigma": 0.3}
    constant_diffusion = True      # D does not depend on z: the noise is fitted in closed form
    description = "Van der Pol: f = (z2, mu (1 - z1^2) z2 - z1), g = (0, sigma)^T"

    def check_params(self):
        if self.params["sigma"] < 0 or self.params["mu"] < 0:
            from ddm_numba.errors import DDMError
            raise DDMError("mu and sigma of van_der_pol must be >= 0")

    def drift(self, z, u=None):
        z1, z2 = z[:, 0], z[:, 1]
        return np.stack([z2, self.mu * (1.0 - z1 ** 2) * z2 - z1], axis=1)

    def diffusion(self, z):
        g = np.zeros((len(z), 2, 1))
        g[:, 1, 0] = self.sigma
        return g


# ---------------------------------------------------------------- the runnable part (application 6)

HERE = os.path.dirname(os.path.abspath(__file__))


def _ddm():
    """The `ddm` command: the console script where it is on PATH, else the module."""
    exe = shutil.which("ddm")
    if exe:
        return [exe]
    venv = os.path.join(os.path.dirname(sys.executable), "ddm")
    if os.path.exists(venv):
        return [venv]
    return [sys.executable, "-m", "ddm_numba_cli.main"]


def _call(args, log, check=True):
    t0 = _time.perf_counter()
    proc = subprocess.run(_ddm() + args, capture_output=True, text=True)
    took = _time.perf_counter() - t0
    log.append({"command": "ddm " + " ".join(args), "seconds": round(took, 2),
                "rc": proc.returncode})
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        log[-1]["error"] = tail[-1] if tail else ""
    if proc.returncode != 0 and check:
        raise RuntimeError(f"ddm {' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stdout}\n{proc.stderr}")
    return proc


def _period_amplitude(t, z, burn):
    """Mean period (upward zero crossings of z1) and mean amplitude (per-cycle max |z1|)."""
    keep = t >= burn
    t, z1 = t[keep], z[:, keep, 0]
    periods, amps = [], []
    for row in z1:
        up = np.flatnonzero((row[:-1] < 0) & (row[1:] >= 0))
        if len(up) < 2:
            continue
        # linear interpolation of the crossing times
        tc = t[up] - row[up] * (t[up + 1] - t[up]) / (row[up + 1] - row[up])
        periods.extend(np.diff(tc))
        for a, b in zip(up[:-1], up[1:]):
            amps.append(np.abs(row[a:b]).max())
    return float(np.mean(periods)), float(np.mean(amps))


def run(out_dir, quick=False):
    """Fit, sample and analyze VanDerPol through the CLI; return the figures of merit."""
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    spec = os.path.abspath(__file__) + ":VanDerPol"
    model = os.path.join(out_dir, "vdp.npz")
    traj = os.path.join(out_dir, "vdp_traj.npz")
    ref = os.path.join(out_dir, "vdp_target.npz")
    png = os.path.join(out_dir, "vdp.png")
    neurons = 128 if quick else 256
    trials, horizon = (40, 60.0) if quick else (100, 100.0)
    log = []
    t_start = _time.perf_counter()

    fit_args = ["fit", spec, "--neurons", str(neurons), "--out", model, "--quiet"]
    if quick:
        fit_args += ["--max-iter", "100"]
    _call(fit_args, log)
    common = ["--trials", str(trials), "--time", str(horizon), "--seed", "1", "--device", "cpu"]
    # a model file names its system but never loads code: the commands that need the target
    # are told where it is (--system), as a user would
    _call(["sample", model, "--out", traj, "--plot", png, "--system", spec] + common, log)
    _call(["sample", model, "--target", "--out", ref, "--system", spec] + common, log)
    analysis = os.path.join(out_dir, "vdp_analysis")
    _call(["analyze", model, "--system", spec, "--out", analysis, "--trials", "20" if quick else "40",
           "--time", "30" if quick else "50", "--grid", "60" if quick else "100"]
          + (["--no-figures"] if quick else []), log, check=False)
    # D = diag(0, sigma^2) is singular (noise on z2 only): entropy production is infinite for such
    # a system and `ddm analyze` (ddm_numba 0.x) stops in the decoder alignment's Cholesky of D.
    # The run goes on without it; its outcome is recorded in the JSON.

    with np.load(model, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
    fitm = meta.get("fit", {})
    with np.load(traj, allow_pickle=False) as f:
        t_net, z_net = f["t"], f["z"]
    with np.load(ref, allow_pickle=False) as f:
        t_tgt, z_tgt = f["t"], f["z"]
    burn = 0.1 * horizon
    zs_net = z_net[:, t_net >= burn].reshape(-1, 2)
    zs_tgt = z_tgt[:, t_tgt >= burn].reshape(-1, 2)
    per_net, amp_net = _period_amplitude(t_net, z_net, burn)
    per_tgt, amp_tgt = _period_amplitude(t_tgt, z_tgt, burn)
    report_path = os.path.join(analysis, "report.json")
    analyze_summary = {}
    if os.path.exists(report_path):
        with open(report_path) as fh:
            rep = json.load(fh)
        analyze_summary = {"ok": True, "sections": sorted(rep)}
    else:
        analyze_summary = {"ok": False, "rc": log[-1]["rc"], "error": log[-1].get("error")}
    merit = {
        "system": "van_der_pol", "neurons": neurons, "quick": bool(quick),
        "e_f": fitm.get("e_f"), "e_D": fitm.get("e_D"),
        "std_network": zs_net.std(0).tolist(), "std_target": zs_tgt.std(0).tolist(),
        "mean_network": zs_net.mean(0).tolist(), "mean_target": zs_tgt.mean(0).tolist(),
        "period_network": per_net, "period_target": per_tgt,
        "amplitude_network": amp_net, "amplitude_target": amp_tgt,
        "trials": trials, "time": horizon, "commands": log, "analyze": analyze_summary,
    }

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(14, 4.2))
    for zz, tt, lab, col in [(z_tgt, t_tgt, "target", "k"), (z_net, t_net, "network", "C1")]:
        k = tt >= burn
        ax[0].plot(zz[0, k, 0], zz[0, k, 1], color=col, lw=0.6, alpha=0.8, label=lab)
        w = tt <= min(horizon, 40.0)
        ax[1].plot(tt[w], zz[0, w, 0], color=col, lw=1, label=lab)
        ax[2].hist(zz[:, k, 0].ravel(), bins=80, density=True, histtype="step", color=col,
                   label=f"{lab} z1")
        ax[2].hist(zz[:, k, 1].ravel(), bins=80, density=True, histtype="step", color=col,
                   ls="--", label=f"{lab} z2")
    ax[0].set(xlabel="z1", ylabel="z2", title="phase plane, trial 0 (same noise)")
    ax[1].set(xlabel="t", ylabel="z1",
              title=f"period {per_net:.2f} (net) vs {per_tgt:.2f} (target)")
    ax[2].set(xlabel="z", title="stationary marginals")
    for a in ax:
        a.legend(fontsize=7)
    fig.suptitle(f"stochastic Van der Pol, N={neurons}: e_f={fitm.get('e_f', float('nan')):.2g}")
    fig.tight_layout()
    fig_path = os.path.join(out_dir, "van_der_pol.png")
    fig.savefig(fig_path, dpi=110)
    plt.close(fig)
    merit["seconds"] = round(_time.perf_counter() - t_start, 1)
    merit["figures"] = [fig_path, png]
    with open(os.path.join(out_dir, "van_der_pol.json"), "w") as fh:
        json.dump(merit, fh, indent=1)
    return merit


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=".")
    ap.add_argument("--quick", action="store_true", help="smaller fit and sampling (tests)")
    args = ap.parse_args()
    merit = run(args.out_dir, quick=args.quick)
    short = {k: v for k, v in merit.items() if k not in ("commands", "analyze")}
    print(json.dumps(short, indent=1))
    for c in merit["commands"]:
        print(f"{c['seconds']:7.2f} s  {c['command']}")


if __name__ == "__main__":
    main()
