"""Learning from data against its peers: the same trajectories, the same held-out points.

    python benchmarks/bench_learning.py [--neurons 256] [--trials 100] [--time 100]
                                        [--cases fine,coarse,coarse-substeps] [--json out.json]

The test case of issue 16: a 2-D nonequilibrium double well,

    f(z) = (z1 − z1³ − 0.5 z2,  −z2 + 0.5 z1),   g(z) = diag(0.4 + 0.2 tanh z1, 0.3 + 0.1 z2²),

simulated (Euler–Maruyama, internal step 0.002) for --trials trials × --time time units and
recorded every Δt = 0.01 ("fine"); "coarse" keeps every 10th sample (Δt = 0.1). Every method sees
the same training trials (the first 80 %) and is scored on the same held-out points: the states of
the last 20 % of trials inside the 0.5–99.5 % quantile box of the training states (the region the
data visit; ddm_numba.fit_data's own definition), with matching.relative_error

    e_f = sqrt( Σ ‖f̂ − f‖² / Σ ‖f − f̄‖² ),   e_D likewise for the 2×2 tensor D = g gᵀ.

Methods (hyper-parameters, where a method has one, chosen on the held-out trials' increments,
as fit_data chooses its own):

  network     ddm_numba.fit_data(neurons=--neurons, state_noise=True) (and --substeps 4 in
              "coarse-substeps"); "drift only": the same without state_noise (the features'
              scale then chosen for the drift alone, D constant);
  KM binned   Kramers–Moyal by bins of width 0.2: E[Δz | bin]/Δt, and D from the squared
              residuals (Δz − f̂ Δt)(…)ᵀ/Δt per bin (written here: a histogram average);
  KM kernel   the `kramersmoyal` package (Nadaraya–Watson, Epanechnikov kernel on a 100×100 grid
              over the data's box), per-trial moments pooled so that no increment crosses two
              trials; D from the second moment with the bias correction − f̂ f̂ᵀ Δt; the
              bandwidth chosen from 0.05 … 0.4 on held-out increments;
  sparse      SINDy-style sparse regression: `pysindy`'s PolynomialLibrary(degree 3) and STLSQ
              on the increments Δz/Δt (threshold from a path), and the same for the residuals'
              r rᵀ/Δt (D); a thresholded least squares written here when pysindy is missing.

Prints a markdown table (e_f, e_D, fit seconds per method and case); --json keeps everything.
"""
import argparse
import datetime
import json
import sys
import time

import warnings

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from ddm_numba import System, Trajectories, fit_data, sample_target
from ddm_numba.matching import relative_error

from _harness import cpu_model  # benchmarks/ is on sys.path when run as a script


class NoneqDoubleWell(System):
    name, d, m = "noneq_double_well", 2, 2
    domain = [[-2.0, 2.0], [-1.5, 1.5]]
    dt, duration = 0.002, 100.0
    params = {}
    description = "2-D nonequilibrium double well with state-dependent diagonal noise"

    def drift(self, z, u=None):
        z1, z2 = z[:, 0], z[:, 1]
        return np.column_stack([z1 - z1 ** 3 - 0.5 * z2, -z2 + 0.5 * z1])

    def diffusion(self, z):
        g = np.zeros((len(z), 2, 2))
        g[:, 0, 0] = 0.4 + 0.2 * np.tanh(z[:, 0])
        g[:, 1, 1] = 0.3 + 0.1 * z[:, 1] ** 2
        return g


TRUTH = NoneqDoubleWell()


def true_D(z):
    g = TRUTH.diffusion(z)
    return np.einsum("kam,kbm->kab", g, g)


def pairs(z):
    """(z_k, z_{k+1}) of every trial of z (trials, T, d), never across trials."""
    return z[:, :-1].reshape(-1, z.shape[2]), z[:, 1:].reshape(-1, z.shape[2])


def outer_targets(r, dt):
    """r rᵀ/Δt per pair, as (K, d, d)."""
    return np.einsum("ka,kb->kab", r, r) / dt


# -- Kramers–Moyal, binned ------------------------------------------------------------------

class BinnedKM:
    def __init__(self, width=0.2):
        self.width = width

    def _index(self, z):
        idx = np.floor((z - self.lo) / self.width).astype(int)
        return np.clip(idx, 0, self.shape - 1)

    def _average(self, z, values):
        flat = np.ravel_multi_index(self._index(z).T, self.shape)
        n = np.bincount(flat, minlength=np.prod(self.shape))
        out = np.stack([np.bincount(flat, v, minlength=np.prod(self.shape))
                        for v in values.reshape(len(values), -1).T], axis=1)
        mean = out / np.maximum(n, 1)[:, None]
        # empty bins: the global mean (they are outside the visited region anyway)
        mean[n == 0] = values.reshape(len(values), -1).mean(axis=0)
        return mean

    def fit(self, z0, z1, dt):
        self.lo = z0.min(axis=0)
        self.shape = np.floor((z0.max(axis=0) - self.lo) / self.width).astype(int) + 1
        self.f_tab = self._average(z0, (z1 - z0) / dt)
        r = z1 - z0 - self.drift(z0) * dt
        self.D_tab = self._average(z0, outer_targets(r, dt))
        return self

    def _lookup(self, tab, z):
        return tab[np.ravel_multi_index(self._index(z).T, self.shape)]

    def drift(self, z):
        return self._lookup(self.f_tab, z)

    def diffusion(self, z):
        return self._lookup(self.D_tab, z).reshape(len(z), 2, 2)


# -- Kramers–Moyal, kernel (the kramersmoyal package) ---------------------------------------------

POWERS = np.array([[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2]])


class KernelKM:
    def __init__(self, bw):
        self.bw = bw

    def fit(self, z_trials, dt, lo, hi, bins=100):
        import kramersmoyal
        edges = [np.linspace(lo[a], hi[a], bins + 1) for a in range(2)]
        num = None
        for tr in z_trials:       # pool unnormalised moments over trials: no cross-trial jumps
            kmc, centres = kramersmoyal.km(tr, bins=edges, powers=POWERS, bw=self.bw)
            taylor = np.prod([[1, 1], [1, 1], [1, 1], [2, 1], [1, 1], [1, 2]], axis=1)
            raw = kmc * kmc[0][None] * taylor[:, None, None]
            raw[0] = kmc[0]
            num = raw if num is None else num + raw
        count = np.maximum(num[0], 1e-300)
        m = num[1:] / count                     # E[Δz^p | z] for the powers above
        f = np.stack([m[0], m[1]], axis=-1) / dt
        # D = (E[Δz Δzᵀ] − f fᵀ Δt²)/Δt
        D = np.empty(f.shape[:2] + (2, 2))
        D[..., 0, 0] = m[2] / dt - f[..., 0] ** 2 * dt
        D[..., 0, 1] = D[..., 1, 0] = m[3] / dt - f[..., 0] * f[..., 1] * dt
        D[..., 1, 1] = m[4] / dt - f[..., 1] ** 2 * dt
        grid = tuple(centres)
        opts = dict(bounds_error=False, fill_value=None)
        self._f = RegularGridInterpolator(grid, f, **opts)
        self._D = RegularGridInterpolator(grid, D.reshape(D.shape[:2] + (4,)), **opts)
        return self

    def drift(self, z):
        return self._f(z)

    def diffusion(self, z):
        return self._D(z).reshape(len(z), 2, 2)


# -- sparse polynomial regression ----------------------------------------------------------------

class Sparse:
    def __init__(self, threshold):
        self.threshold = threshold

    def _library(self, z):
        z1, z2 = z[:, 0], z[:, 1]
        return np.column_stack([np.ones_like(z1), z1, z2, z1 * z1, z1 * z2, z2 * z2, z1 ** 3,
                                z1 * z1 * z2, z1 * z2 * z2, z2 ** 3])

    def _stlsq(self, X, Y, threshold):
        try:
            import pysindy
            opt = pysindy.STLSQ(threshold=threshold, alpha=0.0, max_iter=20)
            opt.fit(X, Y)
            return np.atleast_2d(opt.coef_).T
        except ImportError:         # thresholded least squares (Brunton et al. 2016, STLSQ)
            coef = np.linalg.lstsq(X, Y, rcond=None)[0]
            for _ in range(20):
                small = np.abs(coef) < threshold
                coef[small] = 0.0
                for j in range(Y.shape[1]):
                    big = ~small[:, j]
                    if big.any():
                        coef[big, j] = np.linalg.lstsq(X[:, big], Y[:, j], rcond=None)[0]
            return coef

    def fit(self, z0, z1, dt, threshold_D=None):
        X = self._library(z0)
        self.cf = self._stlsq(X, (z1 - z0) / dt, self.threshold)
        r = z1 - z0 - self.drift(z0) * dt
        self.cD = self._stlsq(X, outer_targets(r, dt).reshape(len(r), 4),
                              self.threshold if threshold_D is None else threshold_D)
        return self

    def drift(self, z):
        return self._library(z) @ self.cf

    def diffusion(self, z):
        return (self._library(z) @ self.cD).reshape(len(z), 2, 2)


# -- the experiment -----------------------------------------------------------------------------

def held_out_increment_loss(model, v0, v1, dt):
    y = (v1 - v0) / dt
    return float(np.mean(np.sum((model.drift(v0) - y) ** 2, axis=1)))


def held_out_diffusion_loss(model, v0, v1, dt):
    r = v1 - v0 - model.drift(v0) * dt
    return float(np.mean((model.diffusion(v0).reshape(len(r), 4)
                          - outer_targets(r, dt).reshape(len(r), 4)) ** 2))


def scores(drift, diffusion, zr):
    return {"e_f": relative_error(drift(zr), TRUTH.drift(zr)),
            "e_D": relative_error(diffusion(zr), true_D(zr))}


def run_case(z, dt, args, substeps):
    trials = z.shape[0]
    n_val = max(1, int(round(0.2 * trials)))
    z_tr, z_va = z[:trials - n_val], z[trials - n_val:]
    z0, z1 = pairs(z_tr)
    v0, v1 = pairs(z_va)
    region = np.column_stack([np.quantile(z0, 0.005, axis=0), np.quantile(z0, 0.995, axis=0)])
    inside = np.all((v0 >= region[:, 0]) & (v0 <= region[:, 1]), axis=1)
    zr = v0[inside]
    rows = {}

    data = Trajectories(np.arange(z.shape[1]) * dt, z)
    # the network twice: with a state-dependent diffusion (its features then serve both fields,
    # and their scale is chosen for both), and drift-only (the scale chosen for the drift alone;
    # its D is the constant residual covariance)
    for name, state_noise in (("network", True), ("network, drift only", False)):
        t0 = time.perf_counter()
        net = fit_data(data, args.neurons, seed=0, state_noise=state_noise, substeps=substeps,
                       truth=False, progress=sys.stderr if args.verbose else None)
        secs = time.perf_counter() - t0
        rows[name] = dict(scores(net.latent_drift, net.latent_diffusion, zr), seconds=secs,
                          stages=net.meta["training"]["stages"])

    t0 = time.perf_counter()
    km = BinnedKM(0.2).fit(z0, z1, dt)
    rows["KM binned (0.2)"] = dict(scores(km.drift, km.diffusion, zr),
                                   seconds=time.perf_counter() - t0)

    t0 = time.perf_counter()
    lo, hi = z0.min(axis=0), z0.max(axis=0)
    best = None
    for bw in (0.05, 0.1, 0.2, 0.4):
        model = KernelKM(bw).fit(z_tr, dt, lo, hi)
        loss = held_out_increment_loss(model, v0, v1, dt)
        if best is None or loss < best[0]:
            best = (loss, bw, model)
    rows["KM kernel (kramersmoyal)"] = dict(scores(best[2].drift, best[2].diffusion, zr),
                                            seconds=time.perf_counter() - t0, bw=best[1])

    t0 = time.perf_counter()
    best = None
    for th in (0.0, 0.02, 0.05, 0.1, 0.2):
        model = Sparse(th).fit(z0, z1, dt)
        loss = held_out_increment_loss(model, v0, v1, dt)
        if best is None or loss < best[0]:
            best = (loss, th, model)
    th_f = best[1]
    best = None
    for th in (0.0, 0.005, 0.01, 0.02, 0.05):
        model = Sparse(th_f).fit(z0, z1, dt, threshold_D=th)
        loss = held_out_diffusion_loss(model, v0, v1, dt)
        if best is None or loss < best[0]:
            best = (loss, th, model)
    rows["sparse cubic (pysindy STLSQ)"] = dict(scores(best[2].drift, best[2].diffusion, zr),
                                                seconds=time.perf_counter() - t0,
                                                threshold_f=th_f, threshold_D=best[1])
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--neurons", type=int, default=256)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--time", type=float, default=100.0)
    ap.add_argument("--cases", default="fine,coarse,coarse-substeps")
    ap.add_argument("--json", default=None)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="Sparsity parameter is too big")
    traj = sample_target(TRUTH, trials=args.trials, time=args.time, seed=5, dt=0.002,
                         record_every=5)
    z = traj.z
    results = {}
    for case in args.cases.split(","):
        if case == "fine":
            results[case] = run_case(z, 0.01, args, 0)
        elif case == "coarse":
            results[case] = run_case(z[:, ::10], 0.1, args, 0)
        elif case == "coarse-substeps":
            results[case] = run_case(z[:, ::10], 0.1, args, 4)
        else:
            raise SystemExit(f"unknown case {case!r}")
        for name, r in results[case].items():
            print(f"[{case}] {name}: e_f {r['e_f']:.3f}, e_D {r['e_D']:.3f}, "
                  f"{r['seconds']:.1f} s", file=sys.stderr, flush=True)
    label = {"fine": "Δt = 0.01", "coarse": "Δt = 0.1", "coarse-substeps": "Δt = 0.1"}
    print("| data | method | e_f | e_D | fit time |")
    print("| --- | --- | --- | --- | --- |")
    for case, rows in results.items():
        for name, r in rows.items():
            if case == "coarse-substeps" and not name.startswith("network"):
                continue
            shown = name + (" --substeps 4" if case == "coarse-substeps" else "")
            print(f"| {label[case]} | {shown} | {r['e_f']:.3f} | {r['e_D']:.3f} | "
                  f"{r['seconds']:.1f} s |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": datetime.date.today().isoformat(), "cpu": cpu_model(),
                       "argv": sys.argv, "results": results}, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
