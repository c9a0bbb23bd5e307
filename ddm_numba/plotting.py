"""Figures: latent trajectories and stationary histograms, network beside target."""
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

    runs: list of (label, Trajectories). Written atomically.
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
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    finally:
        plt.close(fig)
