"""Statistics of huge ensembles without keeping the paths: streaming, mergeable reducers.

A run of 10⁶ trials does not fit in memory as paths (lorenz, 100 time units: 45 GiB), but most
questions about it need only sums: moments, histograms on fixed bins, autocorrelations, how
often and how long the paths sit in each well, the ensemble entropy production. ``Stats`` takes
the paths shard by shard (``add``: a Trajectories of some trials) and keeps only such sums;
two Stats of disjoint shards ``merge`` into the Stats of their union. Counts are integers, so
they merge exactly; sums of floats merge to rounding (their order changes). So shards sampled
anywhere (``sample_network(first_trial=...)``, on a Dask cluster) give the statistics of one
run. The JSON written by ``save`` is plain numbers (docs/formats.md §4).

What is summed, over every trial and every record at or after ``burn_in`` (time):
- moments: count, Σ z_a, Σ z_a z_b (so the mean and the covariance);
- histograms: per coordinate on ``bins`` fixed bins of the box (counts, with under/overflow),
  and for d ≥ 2 the 2-D histogram of every pair of coordinates;
- autocorrelation to ``max_lag`` records: Σ z_a(t) z_a(t + k) and the pair counts, within
  trials (never across a shard's trials);
- wells (when ``wells``, a (n, d) array of centres, is given): a state belongs to well i when it
  is within ``well_radius`` of centre i (the nearest centre), else to none; occupancy counts per
  well; a switch is arriving in a well other than the last one visited (so crossings of the
  space between wells count once); per trial, the time of the first switch (first passage out
  of the starting well), summed with its count, square and a histogram of times;
- entropy production (when ``epr`` is given: a callable z (K, d) → 2 fᵀ D⁻¹ f + ∇·f, as
  analysis.estimators.ensemble_epr): per trial its mean over the records, summed with its
  square, so the value and the standard error from independent trials.
"""
import json

import numpy as np

from .errors import DDMError

FORMAT = "ddm_numba.stats/1"


class Stats:
    """Mergeable sums over trials of recorded latent paths (see the module's docstring)."""

    def __init__(self, box, bins=50, max_lag=0, burn_in=0.0, wells=None, well_radius=None,
                 epr=None, fpt_bins=None):
        self.box = np.asarray(box, dtype=float)
        if self.box.ndim != 2 or self.box.shape[1] != 2 or np.any(self.box[:, 1] <= self.box[:, 0]):
            raise DDMError(f"the box must be (d, 2) rows of lower < upper, got {self.box.tolist()}")
        self.d = d = self.box.shape[0]
        self.bins = int(bins)
        self.max_lag = int(max_lag)
        self.burn_in = float(burn_in)
        if self.bins < 1 or self.max_lag < 0:
            raise DDMError("bins must be >= 1 and max_lag >= 0")
        self.wells = None if wells is None else np.asarray(wells, dtype=float).reshape(-1, d)
        self.well_radius = well_radius
        if self.wells is not None and well_radius is None:
            # half the distance between the two closest centres: disjoint wells
            if len(self.wells) < 2:
                raise DDMError("give at least two wells (centres), or a well_radius")
            gaps = np.linalg.norm(self.wells[:, None] - self.wells[None], axis=-1)
            self.well_radius = 0.5 * float(np.min(gaps[np.triu_indices(len(self.wells), 1)]))
        self.epr = epr
        self.fpt_bins = fpt_bins
        self.trials = 0
        self.count = 0
        self.sum = np.zeros(d)
        self.outer = np.zeros((d, d))
        self.hist = np.zeros((d, self.bins + 2), dtype=np.int64)   # [under, bins..., over]
        n_pairs = d * (d - 1) // 2
        self.hist2 = np.zeros((n_pairs, self.bins, self.bins), dtype=np.int64)
        self.lag_sum = np.zeros((self.max_lag + 1, d))
        self.lag_pairs = np.zeros(self.max_lag + 1, dtype=np.int64)
        n_wells = 0 if self.wells is None else len(self.wells)
        self.occupancy = np.zeros(n_wells + 1, dtype=np.int64)     # [none, well 0, well 1, ...]
        self.switches = np.zeros((n_wells, n_wells), dtype=np.int64)   # from row to column
        self.fpt_count = 0
        self.fpt_sum = 0.0
        self.fpt_sq = 0.0
        self.fpt_hist = None      # made at the first shard with wells, over its time span
        self.fpt_span = None
        self.epr_trials = 0
        self.epr_sum = 0.0
        self.epr_sq = 0.0

    def empty_copy(self):
        """A Stats with the same settings and nothing added (for another shard)."""
        return Stats(self.box, self.bins, self.max_lag, self.burn_in, self.wells,
                     self.well_radius, self.epr, self.fpt_bins)

    # -- adding a shard ---------------------------------------------------------------------
    def add(self, traj):
        """Add a shard's paths (a Trajectories, or (t (T,), z (trials, T, d)))."""
        t, z = (traj.t, traj.z) if hasattr(traj, "z") else traj
        t, z = np.asarray(t, dtype=float), np.asarray(z, dtype=float)
        if z.ndim != 3 or z.shape[2] != self.d or z.shape[1] != t.shape[0]:
            raise DDMError(f"expected z of shape (trials, {len(t)}, {self.d}), got {z.shape}")
        keep = t >= self.burn_in - 1e-12
        z, t = z[:, keep], t[keep]
        trials, T, d = z.shape
        if T == 0:
            raise DDMError(f"no records at or after the burn-in {self.burn_in:g}")
        if not np.all(np.isfinite(z)):
            raise DDMError("the paths contain NaN or infinite values (a trial diverged)")
        self.trials += trials
        flat = z.reshape(-1, d)
        self.count += flat.shape[0]
        self.sum += flat.sum(axis=0)
        self.outer += flat.T @ flat
        edges = self._edges()
        for a in range(d):
            idx = np.searchsorted(edges[a], flat[:, a], side="right")   # 0: under, bins+1: over
            self.hist[a] += np.bincount(idx, minlength=self.bins + 2)
        k = 0
        for a in range(d):
            for b in range(a + 1, d):
                h, _, _ = np.histogram2d(flat[:, a], flat[:, b], bins=[edges[a], edges[b]])
                self.hist2[k] += h.astype(np.int64)
                k += 1
        for lag in range(min(self.max_lag, T - 1) + 1):
            self.lag_sum[lag] += np.einsum("ntd,ntd->d", z[:, :T - lag], z[:, lag:])
            self.lag_pairs[lag] += trials * (T - lag)
        if self.wells is not None:
            self._add_wells(z, t)
        if self.epr is not None:
            terms = np.asarray(self.epr(flat), dtype=float).reshape(trials, T)
            means = terms.mean(axis=1)
            self.epr_trials += trials
            self.epr_sum += float(means.sum())
            self.epr_sq += float((means ** 2).sum())
        return self

    def _edges(self):
        return [np.linspace(lo, hi, self.bins + 1) for lo, hi in self.box]

    def _labels(self, z):
        """Well index + 1 of each state (0: in no well)."""
        dist = np.linalg.norm(z[..., None, :] - self.wells, axis=-1)
        nearest = np.argmin(dist, axis=-1)
        inside = np.take_along_axis(dist, nearest[..., None], axis=-1)[..., 0] <= self.well_radius
        return np.where(inside, nearest + 1, 0)

    def _add_wells(self, z, t):
        labels = self._labels(z)                                   # (trials, T)
        self.occupancy += np.bincount(labels.ravel(), minlength=len(self.occupancy))
        span = float(t[-1] - t[0]) if len(t) > 1 else 1.0
        if self.fpt_hist is None:
            self.fpt_hist = np.zeros(self.fpt_bins or 50, dtype=np.int64)
            self.fpt_span = span
        # this shard's first-passage sums, added to the totals once: so that sums over shards
        # are added in the same order whether the shards were added here or merged
        fsum = fsq = 0.0
        for row in labels:
            visited = row[row > 0]
            if visited.size == 0:
                continue
            # the wells in the order first reached, repeats dropped: each change is a switch
            change = np.flatnonzero(np.diff(visited) != 0)
            for i in change:
                self.switches[visited[i] - 1, visited[i + 1] - 1] += 1
            if change.size:
                # first passage: the first record in a well other than the first well visited
                first = np.flatnonzero(row > 0)[change[0] + 1]
                tau = float(t[first] - t[0])
                self.fpt_count += 1
                fsum += tau
                fsq += tau * tau
                j = min(int(tau / self.fpt_span * len(self.fpt_hist)), len(self.fpt_hist) - 1)
                self.fpt_hist[j] += 1
        self.fpt_sum += fsum
        self.fpt_sq += fsq

    # -- merging ----------------------------------------------------------------------------
    def merge(self, other):
        """Add another Stats of other trials, made with the same settings."""
        same = (np.array_equal(self.box, other.box) and self.bins == other.bins
                and self.max_lag == other.max_lag and self.burn_in == other.burn_in
                and (self.wells is None) == (other.wells is None)
                and (self.epr is None) == (other.epr is None))
        if same and self.wells is not None:
            same = np.array_equal(self.wells, other.wells) and self.well_radius == other.well_radius
        if not same:
            raise DDMError("these statistics were made with different settings and cannot merge")
        for name in ("trials", "count", "sum", "outer", "hist", "hist2", "lag_sum", "lag_pairs",
                     "occupancy", "switches", "fpt_count", "fpt_sum", "fpt_sq", "epr_trials",
                     "epr_sum", "epr_sq"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.fpt_hist is not None:
            if self.fpt_hist is None:
                self.fpt_hist, self.fpt_span = other.fpt_hist.copy(), other.fpt_span
            else:
                self.fpt_hist = self.fpt_hist + other.fpt_hist
        return self

    # -- results ----------------------------------------------------------------------------
    def summary(self):
        """The statistics as plain numbers and lists (JSON-ready)."""
        if self.count == 0:
            raise DDMError("no paths were added")
        mean = self.sum / self.count
        cov = self.outer / self.count - np.outer(mean, mean)
        out = {"format": FORMAT, "trials": int(self.trials), "records": int(self.count),
               "burn_in": self.burn_in, "box": self.box.tolist(), "mean": mean.tolist(),
               "covariance": cov.tolist(),
               "histogram": {"bins": self.bins, "edges": [e.tolist() for e in self._edges()],
                             "counts": self.hist[:, 1:-1].tolist(),
                             "under": self.hist[:, 0].tolist(), "over": self.hist[:, -1].tolist()},
               "sums": {"sum": self.sum.tolist(), "outer": self.outer.tolist()}}
        if self.d >= 2:
            pairs = [[a, b] for a in range(self.d) for b in range(a + 1, self.d)]
            out["histogram2d"] = {"pairs": pairs, "counts": self.hist2.tolist()}
        if self.max_lag > 0:
            pairs = np.maximum(self.lag_pairs, 1)[:, None]
            # the autocovariance around the ensemble mean, normalised by lag 0
            acov = self.lag_sum / pairs - mean ** 2
            out["autocorrelation"] = {"lag_records": list(range(self.max_lag + 1)),
                                      "pairs": self.lag_pairs.tolist(),
                                      "sum": self.lag_sum.tolist(),
                                      "acf": (acov / np.where(acov[0] > 0, acov[0], 1)).tolist()}
        if self.wells is not None:
            fpt = {"count": int(self.fpt_count)}
            if self.fpt_count:
                m = self.fpt_sum / self.fpt_count
                fpt.update(mean=m, sum=self.fpt_sum, sum_sq=self.fpt_sq,
                           stderr=float(np.sqrt(max(self.fpt_sq / self.fpt_count - m * m, 0)
                                                / max(self.fpt_count - 1, 1))))
            if self.fpt_hist is not None:
                fpt["histogram"] = {"span": self.fpt_span, "counts": self.fpt_hist.tolist()}
            out["wells"] = {"centres": self.wells.tolist(), "radius": self.well_radius,
                            "occupancy_none": int(self.occupancy[0]),
                            "occupancy": self.occupancy[1:].tolist(),
                            "switches": self.switches.tolist(),
                            "first_passage": fpt}
        if self.epr is not None and self.epr_trials:
            m = self.epr_sum / self.epr_trials
            var = max(self.epr_sq / self.epr_trials - m * m, 0.0)
            out["ensemble_epr"] = {"epr": m, "stderr": float(np.sqrt(var / max(self.epr_trials - 1, 1))),
                                   "trials": int(self.epr_trials), "sum": self.epr_sum,
                                   "sum_sq": self.epr_sq}
        return out

    def save(self, path):
        """The summary as JSON, atomically."""
        from .network import atomic_write
        data = json.dumps(self.summary(), indent=1).encode()
        atomic_write(path, lambda fh: fh.write(data))


class EnsembleEprTerms:
    """z (K, d) → 2 f(z)ᵀ D⁻¹ f(z) + ∇·f(z) of a network's latent SDE: the terms whose mean over
    stationary states is the entropy production rate (docs/irreversibility.md §3.1 (b)). A
    class, not a closure, so that it travels to Dask workers with its network."""

    def __init__(self, net):
        from .analysis.connectivity import constant_diffusion
        if constant_diffusion(net) is None:
            raise DDMError("the ensemble entropy production needs a constant latent diffusion; "
                           "this model's depends on the state (R ≠ 0)")
        self.net = net

    def __call__(self, z):
        from .analysis.fields import network_side
        side = network_side(self.net)
        f = side.drift(z)
        return 2.0 * np.einsum("ka,ab,kb->k", f, np.linalg.inv(side.D), f) + side.divergence(z)


def sample_stats(model, trials, shard, stats, workers=None, scheduler=None, progress=None,
                 target=False, **options):
    """Sample ``trials`` trials of the network (or, with ``target``, of the System ``model``) in
    shards of ``shard`` (trials a … a + shard − 1 each, rng streams by first_trial) and add each
    to ``stats``, keeping no paths: memory is one shard's. Local (workers and scheduler None) or
    on a Dask cluster (cluster.connect), the sums are those of one run: shards are merged in
    trial order. Returns stats."""
    import time
    from .simulate import sample_network, sample_target
    trials, shard = int(trials), int(shard)
    if trials < 1 or shard < 1:
        raise DDMError("trials and --shard must be at least 1")
    first = int(options.pop("first_trial", 0))
    starts = list(range(0, trials, shard))
    t0 = time.perf_counter()

    def report(k):
        if progress is not None:
            el = time.perf_counter() - t0
            print(f"  stats: {k}/{len(starts)} shards ({min(k * shard, trials)} of {trials} "
                  f"trials), {el:.0f}s, ETA {el / k * (len(starts) - k):.0f}s",
                  file=progress, flush=True)

    if workers is None and scheduler is None:
        for k, a in enumerate(starts, 1):
            sampler = sample_target if target else sample_network
            stats.add(sampler(model, trials=min(shard, trials - a), first_trial=first + a,
                              progress=None, **options))
            report(k)
        return stats
    from .cluster import _distributed, connect
    distributed = _distributed()
    if not target:
        options.setdefault("device", "cpu")
    with connect(workers, scheduler) as client:
        futures = {client.submit(_shard_stats, model, min(shard, trials - a), first + a,
                                 options, stats.empty_copy(), target, retries=2,
                                 pure=False): a for a in starts}
        parts = {}
        for k, fut in enumerate(distributed.as_completed(futures), 1):
            parts[futures[fut]] = fut.result()
            report(k)
    # merged in shard order, the float sums are added in the same order as a local run's
    for a in starts:
        stats.merge(parts.pop(a))
    return stats


def _shard_stats(model, trials, first_trial, options, empty, target):
    """One shard on a worker: its paths, reduced there (only the sums travel back)."""
    from .cluster import _sample_shard
    return empty.add(_sample_shard(model, trials, first_trial, options, target))
