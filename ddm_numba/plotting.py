"""Figures: latent trajectories and stationary histograms, network beside target.

The figures of `ddm analyze` draw what they are given: the report, the sides and fields of
analysis.fields, grid solutions and trajectories; what they show is computed there.
"""
import io
import os

import numpy as np

from .network import atomic_write



def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_comparison(path, runs, burn_in, title=""):
    """PNG with one column per run (e.g. network, target): a few latent traces over time, and the
    stationary distribution after ``burn_in`` (histogram for d = 1, 2-D histogram of the first two
    coordinates for d ≥ 2, with the marginal of each run overlaid for d = 1).

    runs: list of (label, Trajectories). Written atomically; with path None, the PNG's bytes
    are returned instead (the CLI writes its outputs only once all of them are computed).
    """
    plt = _pyplot()
    d = runs[0][1].z.shape[2]
    fig, axes = plt.subplots(2, len(runs), figsize=(5.2 * len(runs), 7.5), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, (label, traj) in enumerate(runs):
        ax = axes[0, col]
        show = min(3, traj.z.shape[0])
        for tr in range(show):
            for a in range(min(d, 3)):
                ax.plot(traj.t, traj.z[tr, :, a], lw=0.6, color=colors[a % len(colors)],
                        alpha=1.0 - 0.25 * tr, label=f"z{a + 1}" if tr == 0 else None)
        ax.axvline(burn_in, color="k", ls=":", lw=0.8)
        ax.set_xlabel("t")
        ax.set_ylabel("latent z")
        ax.set_title(f"{label}: {show} of {traj.z.shape[0]} trials")
        ax.legend(loc="upper right", fontsize=8)
        zs = traj.stationary(burn_in)
        ax = axes[1, col]
        if d == 1:
            for other_label, other in runs:
                ax.hist(other.stationary(burn_in)[:, 0], bins=60, density=True,
                        histtype="step", lw=1.5 if other is traj else 0.8, label=other_label)
            ax.set_xlabel("z")
            ax.set_ylabel("stationary density")
            ax.legend(fontsize=8)
        else:
            j = 2 if d >= 3 else 1  # for 3-D systems (Lorenz) x–z shows the butterfly
            ax.hist2d(zs[:, 0], zs[:, j], bins=80, cmap="viridis")
            ax.set_xlabel("z1")
            ax.set_ylabel(f"z{j + 1}")
        ax.set_title(f"{label}: stationary, t ≥ {burn_in:g}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        if path is None:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110)
            return buf.getvalue()
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    finally:
        plt.close(fig)


# -- `ddm analyze` figures ---------------------------------------------------------------------

def _save(fig, path, plt):
    try:
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    finally:
        plt.close(fig)
    return os.path.basename(path)


def _epr_text(irr):
    """A one-line summary of the e_p values of one side for titles."""
    parts = []
    for key, label in (("closed_form", "exact"), ("grid", "grid"), ("ensemble", "ens.")):
        entry = irr.get(key, {})
        v = entry.get("epr_richardson" if key == "grid" else "epr")
        if v is not None and "warning" not in entry:  # a flagged ensemble value would mislead
            parts.append(f"{label} {v:.3g}")
    return "e_p: " + ", ".join(parts) if parts else ""


def _kind_marker(kind):
    return {"stable": "o", "unstable": "^", "saddle": "x"}.get(kind.split()[0], "s")


def _fixed_points(ax, fps, j=1):
    for p in fps:
        z = np.asarray(p.z)
        filled = p.kind.startswith("stable")
        ax.plot(z[0], z[j] if len(z) > 1 else 0.0, _kind_marker(p.kind), ms=8,
                mfc="w" if not filled else "r", mec="r", mew=1.5)


def figure_connectivity(path, net, sp, rep, alignment, W_parts):
    """W, W_s, W_a (``W_parts``, from fields.split_W), the spectra ``sp`` and the decoder
    alignment (connectivity.decoder_alignment or None) with its summary from the report."""
    plt = _pyplot()
    W = W_parts[0]
    n = min(net.N, 120)
    fig, axes = plt.subplots(2, 3, figsize=(14, 8.5))
    parts = tuple(zip(("W", "W_s = (W + Wᵀ)/2", "W_a = (W − Wᵀ)/2"), W_parts))
    vmax = np.abs(W[:n, :n]).max() or 1.0
    for ax, (label, mat) in zip(axes[0], parts):
        im = ax.imshow(mat[:n, :n], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"{label} (first {n} of {net.N} neurons)")
        fig.colorbar(im, ax=ax, shrink=0.8)
    a = rep["asymmetry"]["a"]
    a_text = "undefined (W = 0)" if a is None else f"{a:.3f}"
    ax = axes[1, 0]
    ev = np.asarray(sp["eig_W"])
    ax.plot(ev.real, ev.imag, ".", ms=4, label="W" + (" (nonzero)" if net.mode == "lowrank" else ""))
    lat = np.asarray(sp["eig_latent"])
    ax.plot(lat.real, lat.imag, "o", mfc="none", ms=9, label="latent G M (d×d)")
    ax.axvline(1.0, color="k", ls=":", lw=0.8)
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title(f"eigenvalues; asymmetry ‖W_a‖/‖W‖ = {a_text}")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    sv = np.asarray(sp["singular_values"])[:40]
    ax.semilogy(np.arange(1, len(sv) + 1), np.maximum(sv, 1e-300), "o-", ms=3)
    ax.set_xlabel("index")
    ax.set_title(f"singular values of W (rank {sp['rank']})")
    ax = axes[1, 2]
    al = rep.get("decoder_alignment")
    if al is not None:
        ax.hist(alignment["cos"], bins=40, weights=alignment["weights"], color="C2")
        ax.set_xlabel("cos(a_i, D m_i) in the metric of D")
        ax.set_title(f"decoder alignment: weighted |cos| = {al['weighted_abs_cos']:.3f}\n"
                     "(1: reversible latent dynamics)")
    else:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path, plt)


def _stream(ax, drift, box, color="w"):
    xs = np.linspace(box[0, 0], box[0, 1], 40)
    ys = np.linspace(box[1, 0], box[1, 1], 40)
    X, Y = np.meshgrid(xs, ys)
    F = drift(np.column_stack([X.ravel(), Y.ravel()]))
    ax.streamplot(xs, ys, F[:, 0].reshape(X.shape), F[:, 1].reshape(X.shape), color=color,
                  density=0.9, linewidth=0.6, arrowsize=0.8)


def _current_lines(ax, sol, Jn):
    """Streamlines of J, thicker where |J| is larger (quiver on a mapped, non-regular grid)."""
    P = sol.points
    x, y = P[:, 0, 0], P[0, :, 1]
    regular = (np.allclose(P[..., 0], x[:, None]) and np.allclose(P[..., 1], y[None, :])
               and np.allclose(np.diff(x), np.diff(x)[0]) and np.allclose(np.diff(y), np.diff(y)[0]))
    if regular:
        width = 0.3 + 2.2 * (Jn / max(Jn.max(), 1e-300)).T
        ax.streamplot(x, y, sol.J[..., 0].T, sol.J[..., 1].T, color="c", density=1.1,
                      linewidth=width, arrowsize=0.8)
    else:
        step = max(1, P.shape[0] // 22)
        ax.quiver(P[::step, ::step, 0], P[::step, ::step, 1], sol.J[::step, ::step, 0],
                  sol.J[::step, ::step, 1], color="c")


def figure_flow(path, sides, grids, report, trajs, burn_in, box, fps):
    plt = _pyplot()
    d = box.shape[0]
    labels = [s.label for s in sides]
    if d == 2:
        fig, axes = plt.subplots(2, len(sides), figsize=(6 * len(sides), 10.5), squeeze=False)
        for col, side in enumerate(sides):
            sol = grids.get(side.label)
            ax = axes[0, col]
            if sol is not None:
                X, Y = sol.corners
                ax.pcolormesh(X, Y, sol.density, cmap="viridis", shading="flat")
            _stream(ax, side.drift, box)
            _fixed_points(ax, fps[side.label])
            ax.set_title(f"{side.label}: p_s and drift f\n"
                         f"{_epr_text(report['irreversibility'][side.label])}")
            ax = axes[1, col]
            if sol is not None:
                X, Y = sol.corners
                Jn = np.linalg.norm(sol.J, axis=-1)
                ax.pcolormesh(X, Y, Jn, cmap="magma", shading="flat")
                _current_lines(ax, sol, Jn)
            rot = report["irreversibility"][side.label].get("grid", {}).get("rotation", "")
            ax.set_title(f"{side.label}: stationary current J (|J| and its lines)\n"
                         f"circulates {rot}")
            for ax in axes[:, col]:
                ax.set_xlim(box[0])
                ax.set_ylim(box[1])
                ax.set_aspect("equal")
                ax.set_xlabel("z1")
                ax.set_ylabel("z2")
    elif d == 1:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
        zz = np.linspace(box[0, 0], box[0, 1], 400)[:, None]
        for side in sides:
            sol = grids.get(side.label)
            if sol is not None:
                axes[0].plot(sol.points[:, 0], sol.density, label=f"{side.label} (Fokker–Planck)")
            axes[1].plot(zz[:, 0], side.drift(zz)[:, 0], label=side.label)
            axes[2].plot(zz[:, 0], side.diffusion(zz)[:, 0, 0], label=side.label)
        for label, traj in trajs.items():
            if traj is not None:
                axes[0].hist(traj.stationary(burn_in)[:, 0], bins=80, density=True,
                             histtype="step", lw=0.8, label=f"{label} (samples)")
        for p in fps.get(labels[0], []):
            axes[1].axvline(np.asarray(p.z)[0], color="k", ls=":", lw=0.7)
        axes[1].axhline(0, color="k", lw=0.5)
        for ax, t in zip(axes, ("stationary density p_s", "drift f(z)", "diffusion D(z)")):
            ax.set_title(t)
            ax.set_xlabel("z")
            ax.legend(fontsize=8)
    else:
        fig, axes = plt.subplots(1, len(sides), figsize=(6 * len(sides), 5), squeeze=False)
        for col, side in enumerate(sides):
            traj = trajs.get(side.label)
            ax = axes[0, col]
            if traj is not None:
                zs = traj.stationary(burn_in)
                ax.hist2d(zs[:, 0], zs[:, 2], bins=100, cmap="viridis")
            _fixed_points(ax, fps[side.label], j=2)
            ly = report.get("lyapunov", {}).get(side.label, {})
            extra = f", λ_max = {ly['mean']:.3f}" if "mean" in ly else ""
            ax.set_title(f"{side.label}: stationary z1–z3, fixed points{extra}\n"
                         f"{_epr_text(report['irreversibility'][side.label])}")
            ax.set_xlabel("z1")
            ax.set_ylabel("z3")
    fig.tight_layout()
    return _save(fig, path, plt)


def figure_irreversibility(path, report):
    plt = _pyplot()
    irr = report["irreversibility"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    methods = [("closed_form", "exact"), ("grid", "grid"), ("ensemble", "ensemble"),
               ("ar1", "AR(1)"), ("lagged_covariance", "lagged C")]
    ax = axes[0]
    width = 0.8 / max(len(irr), 1)
    for i, label in enumerate(irr):
        vals, errs = [], []
        for key, _ in methods:
            entry = irr[label].get(key) or irr[label].get("trajectory", {}).get(key) or {}
            v = entry.get("epr_richardson", entry.get("epr"))
            vals.append(np.nan if v is None else v)
            errs.append(entry.get("stderr") or 0.0)
        ax.bar(np.arange(len(methods)) + width * i, vals, width=width * 0.95, yerr=errs,
               label=label)
    ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2)
    ax.set_xticklabels([name for _, name in methods])
    ax.set_ylabel("entropy production rate e_p")
    ax.set_title("e_p by method (trajectory estimators: best linear fit)")
    ax.legend()
    ax = axes[1]
    split = irr.get("network", {}).get("split_ensemble")
    split_g = irr.get("network", {}).get("split_grid")
    if split:
        names = ["total", "symmetric", "antisymmetric"]
        width = 0.4 if split_g else 0.8
        ax.bar(np.arange(3), [split[k]["epr"] for k in names], width=width,
               yerr=[split[k]["stderr"] for k in names], color=["C1", "C0", "C3"],
               label="ensemble (samples)")
        if split_g:
            grid_total = irr["network"]["grid"]["epr"]
            ax.bar(np.arange(3) + width, [grid_total, split_g["symmetric"],
                                          split_g["antisymmetric"]], width=width,
                   color=["C1", "C0", "C3"], alpha=0.5, hatch="//", label="grid")
            ax.legend(fontsize=8)
        ax.set_xticks(np.arange(3) + (width / 2 if split_g else 0))
        ax.set_xticklabels(names)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title("network: e_p = e_p,s + e_p,a along W = W_s + W_a")
    else:
        ax.axis("off")
    ax = axes[2]
    comp = report.get("comparison", {})
    dt = comp.get("acf_lag_dt", 1.0)
    if "cross_asymmetry" in comp:
        for label, curve in comp["cross_asymmetry"].items():
            ax.plot(np.arange(len(curve)) * dt, curve, label=label)
        ax.set_title("C12(τ) − C21(τ) (0 for reversible processes)")
    elif "acf" in comp:
        for label, curve in comp["acf"].items():
            ax.plot(np.arange(len(curve)) * dt, np.asarray(curve)[:, 0], label=label)
        ax.set_title("autocorrelation of z1")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("lag τ")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    return _save(fig, path, plt)


def figure_parts(path, part_sides, part_trajs, burn_in, box):
    plt = _pyplot()
    d = box.shape[0]
    names = [s.label for s in part_sides]
    if d == 2:
        fig, axes = plt.subplots(2, len(part_sides), figsize=(5.5 * len(part_sides), 10))
        for col, side in enumerate(part_sides):
            ax = axes[0, col]
            _stream(ax, side.drift, box, color="C0")
            ax.set_title(f"latent drift of {side.label} (on the manifold)")
            ax.set_xlim(box[0])
            ax.set_ylim(box[1])
            ax.set_aspect("equal")
            ax = axes[1, col]
            traj = part_trajs.get(side.label)
            if traj is not None:
                zs = traj.stationary(min(burn_in, 0.5 * traj.t[-1]))
                # the parts leave the manifold and may leave the target's box: show all of it
                lo = np.minimum(np.percentile(zs, 0.5, axis=0), box[:, 0])
                hi = np.maximum(np.percentile(zs, 99.5, axis=0), box[:, 1])
                ax.hist2d(zs[:, 0], zs[:, 1], bins=60, range=np.column_stack([lo, hi]),
                          cmap="viridis")
                ax.add_patch(plt.Rectangle(box[:, 0], *(box[:, 1] - box[:, 0]), fill=False,
                                           ec="w", ls=":", lw=1))
            ax.set_title(f"{side.label}: simulated, latent readout\n(dotted: the target's box)")
    else:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        if d == 1:
            zz = np.linspace(box[0, 0], box[0, 1], 300)[:, None]
            for side in part_sides:
                axes[0].plot(zz[:, 0], side.drift(zz)[:, 0], label=side.label)
            axes[0].axhline(0, color="k", lw=0.5)
            axes[0].set_title("latent drift of each part")
            axes[0].legend(fontsize=8)
        for name in names:
            traj = part_trajs.get(name)
            if traj is None:
                continue
            zs = traj.stationary(min(burn_in, 0.5 * traj.t[-1]))
            if d == 1:
                axes[1].hist(zs[:, 0], bins=80, density=True, histtype="step", label=name)
            else:
                axes[1 if d == 1 else names.index(name) % 2].plot(
                    zs[::7, 0], zs[::7, 2], ".", ms=1, label=name, alpha=0.5)
        axes[1].set_title("simulated, latent readout")
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, plt)


def analysis_figures(out, net, report, connectivity, sides, grids, trajs, fps, burn_in, box,
                     part_sides):
    """All figures of `ddm analyze`; returns the file names written in ``out``.

    connectivity: (spectra, alignment, W_parts) — the spectra of W's parts, the decoder alignment
    (connectivity.decoder_alignment, or None) and (W, W_s, W_a) (fields.split_W); sides: the
    target's and the network's (fields), either may be None; trajs: {"target", "network",
    "parts"} trajectories (parts: {name: Trajectories}); fps: {"target", "network"} fixed points;
    part_sides: fields.part_sides(net).
    """
    sp, alignment, W_parts = connectivity
    traj_t, traj_n = trajs["target"], trajs["network"]
    sides = [s for s in sides if s is not None]
    files = [figure_connectivity(os.path.join(out, "connectivity.png"), net, sp,
                                 report["connectivity"], alignment, W_parts),
             figure_flow(os.path.join(out, "flow.png"), sides, grids, report,
                         {"target": traj_t, "network": traj_n}, burn_in, box, fps),
             figure_irreversibility(os.path.join(out, "irreversibility.png"), report)]
    runs = [(label, t) for label, t in (("network", traj_n), ("target", traj_t)) if t is not None]
    plot_comparison(os.path.join(out, "trajectories.png"), runs, burn_in)
    files.append("trajectories.png")
    trajs_p = dict(trajs["parts"])
    trajs_p["network"] = traj_n
    files.append(figure_parts(os.path.join(out, "parts.png"), part_sides, trajs_p, burn_in, box))
    return files
