"""Sweeps of fits and sharded sampling on dask.distributed (the optional extra ``cluster``).

Why dask.distributed and not a scheduler of our own: it already starts local worker processes
(``LocalCluster``), connects to any running cluster by its scheduler's address (SLURM and PBS
through dask-jobqueue), retries a task whose worker died, and reports every failure as an
exception on the driver. What it does not know, and this module adds:

- **Pinned threads.** numba starts as many threads as cores in every worker process, and several
  workers on one machine then fight over the cores at every parallel region's barrier (measured:
  a 4-fit sweep took 84–109 s with Dask's defaults, 14.5 s with numba pinned to one thread per
  worker). Local workers are started with NUMBA_NUM_THREADS = OMP/OPENBLAS/MKL_NUM_THREADS = 1;
  on a cluster someone else started, each task sets numba's count for its own thread
  (``numba.set_num_threads`` is per thread) and fit pins BLAS itself (threads.one_blas_thread).
  Results do not depend on either count, so a cell's model equals a serial ``ddm fit`` bit for bit.
- **Compiled once.** Before tasks go out, the driver runs one tiny fit of each kind the sweep
  uses, so numba's on-disk cache holds its kernels: local workers, which share that cache, load
  them instead of compiling for about 45 s each. Workers of a remote cluster warm once each, at
  the start (``Client.run``), not per task.
- **Files on the driver.** A task returns its model; the driver writes ``DIR/<cell>.npz``
  atomically and the table ``DIR/results.csv`` after every cell, so no shared file system is
  needed and an interrupted sweep leaves only whole files. A cell whose file exists is read back,
  not refitted: a rerun resumes where the last one stopped and ends with the same table.
- **Failures in the table.** A task is retried (``retries``) when it raises or its worker dies; a
  cell that still fails gets a row with its error, and the sweep goes on.
"""
import csv
import io
import itertools
import logging
import math
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import DDMError

# set in every local worker process before it starts (numba and BLAS read them at import)
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}
RESULTS = "results.csv"
LEADING = ["cell", "system", "neurons", "seed", "params", "status", "e_f", "e_D", "verdict",
           "seconds", "file", "error"]


def _distributed():
    try:
        import distributed
    except ImportError:
        raise DDMError("sweeps and distributed sampling need dask.distributed: "
                       "pip install 'ddm_numba[cluster]' (or pip install distributed)") from None
    return distributed


@contextmanager
def connect(workers=None, scheduler=None):
    """A distributed.Client: to the cluster at ``scheduler`` (an address such as
    tcp://host:8786), or to a new LocalCluster of ``workers`` processes (default 2) with one
    thread each, numba and BLAS pinned (WORKER_ENV). The local cluster is closed on exit."""
    distributed = _distributed()
    if scheduler is not None and workers is not None:
        raise DDMError("give either a number of local workers or a scheduler address, not both")
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise DDMError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
        return
    n = int(workers or 2)
    if n < 1:
        raise DDMError(f"workers must be at least 1, got {n}")
    cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                       env=dict(WORKER_ENV), dashboard_address=None,
                                       silence_logs=logging.ERROR)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _one_thread():
    """numba's thread count for the calling thread: 1 (a worker of a cluster started elsewhere
    may have numba at every core)."""
    import numba
    numba.set_num_threads(1)


def cell_name(system_name, neurons, seed, params):
    """The file stem of a cell: system_N<neurons>_seed<seed>[_name=value...], with every
    character outside [A-Za-z0-9_.=-] replaced by '-' (safe on every file system)."""
    parts = [system_name, f"N{neurons}", f"seed{seed}"]
    parts += [f"{k}={v:g}" for k, v in sorted(params.items())]
    return re.sub(r"[^A-Za-z0-9_.=-]", "-", "_".join(parts))


def parse_range(text, what):
    """'0:4' -> [0, 1, 2, 3]; '1,5,9' -> [1, 5, 9]; '7' -> [7] (whole numbers >= 0)."""
    text = str(text).strip()
    try:
        if ":" in text:
            lo, hi = (int(s) for s in text.split(":", 1))
            values = list(range(lo, hi))
        else:
            values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise DDMError(f"{what}: {text!r} is not a list (1,2,3) or a range (0:4) of whole "
                       "numbers") from None
    if not values or min(values) < 0:
        raise DDMError(f"{what}: {text!r} gives no values >= 0")
    return values


def parse_sweep_params(items):
    """['sigma=0.1,0.2', 'omega=1'] -> {'sigma': [0.1, 0.2], 'omega': [1.0]}."""
    out = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DDMError(f"malformed --param {item!r}: write NAME=V1,V2,..., e.g. sigma=0.1,0.2")
        try:
            out[key] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise DDMError(f"malformed --param {item!r}: the values must be numbers") from None
        if not out[key] or not all(math.isfinite(v) for v in out[key]):
            raise DDMError(f"--param {item!r}: give finite numbers")
    return out


def _cells(spec, name, neurons, seeds, params):
    """Every (cell, neurons, seed, params) of the product, in a fixed order."""
    keys = sorted(params)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(params[k] for k in keys))]
    cells = []
    for N in neurons:
        for combo in combos:
            for seed in seeds:
                cells.append((cell_name(name, N, seed, combo), int(N), int(seed), combo))
    names = [c[0] for c in cells]
    if len(set(names)) != len(names):
        raise DDMError("two cells of the sweep would share a file name; give distinct values")
    return cells


def _fit_cell(spec, params, neurons, seed, options):
    """One cell, on a worker: fit(system with params, neurons, seed, **options). Returns
    (the Network, seconds)."""
    from .matching import fit
    from .systems import get_system
    _one_thread()
    t0 = time.perf_counter()
    net = fit(get_system(spec, **params), neurons, seed=seed, progress=None, **options)
    return net, time.perf_counter() - t0


def _warm(spec, params, options):
    """A tiny fit with the sweep's options, for numba's cache (driver or each remote worker)."""
    from .matching import fit
    from .systems import get_system
    _one_thread()
    system = get_system(spec, **params)
    tiny = dict(options, max_iter=2, samples=None, visit_runs=4, self_check_time=0.5)
    fit(system, 4 * system.d + 4 + system.p, seed=0, progress=None, **tiny)


def _row(cell, name, neurons, seed, params, net=None, seconds=None, file=None, error=None):
    """A row of results.csv: the cell, its figures of fit and self-check, or its error."""
    row = {"cell": cell, "system": name, "neurons": neurons, "seed": seed,
           "params": ";".join(f"{k}={v:g}" for k, v in sorted(params.items())),
           "status": "failed" if error else "done", "file": file or "",
           "error": error or "", "seconds": "" if seconds is None else f"{seconds:.3f}"}
    if net is not None:
        for key, value in net.meta.get("fit", {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[key] = repr(float(value))
        check = net.meta.get("self_check") or {}
        row["verdict"] = check.get("verdict", "")
    return row


def _write_table(path, rows):
    """results.csv, atomically: the leading columns, then every other figure, sorted."""
    from .network import atomic_write
    extra = sorted({k for r in rows for k in r} - set(LEADING))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LEADING + extra, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in LEADING + extra})
    data = buf.getvalue().encode()
    atomic_write(path, lambda fh: fh.write(data))


def read_table(path):
    """The rows of a results.csv, as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def sweep(system, neurons, seeds, out_dir, params=None, workers=None, scheduler=None,
          retries=2, progress=sys.stderr, **options):
    """Fit every cell of neurons × params × seeds on a Dask cluster; returns the table's rows.

    system: a built-in name or a spec ('file.py:NAME', as for fit); params: {name: [values]} of
    the system's parameters; options: fit's keyword options, the same for every cell (device
    defaults to "cpu" here). Each cell's model goes to out_dir/<cell>.npz (cell_name), the table
    to out_dir/results.csv, kept current as cells finish. A cell whose file exists is read back,
    not refitted. workers / scheduler: see ``connect``.
    """
    from .network import Network
    from .systems import get_system
    params = dict(params or {})
    neurons = [int(n) for n in neurons]
    seeds = [int(s) for s in seeds]
    if not neurons or min(neurons) < 1:
        raise DDMError("a sweep needs neurons >= 1")
    if isinstance(system, str) and ":" in system and not system.startswith(("/", ".")):
        file_part = system.rsplit(":", 1)[0]
        if os.path.exists(file_part):      # a user's file: workers resolve it from anywhere
            system = os.path.abspath(file_part) + ":" + system.rsplit(":", 1)[1]
    first = {k: v[0] for k, v in params.items()}
    probe = get_system(system, **first)    # a bad name or parameter fails here, not per cell
    name = probe.name
    options = dict(options)
    options.setdefault("device", "cpu")
    for bad in ("progress", "seed", "neurons", "checkpoint", "resume"):
        if bad in options:
            raise DDMError(f"{bad!r} is set per cell by the sweep, not as a fit option")
    cells = _cells(system, name, neurons, seeds, params)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / RESULTS

    def say(msg):
        if progress is not None:
            print(msg, file=progress, flush=True)

    rows, todo = {}, []
    for cell, N, seed, combo in cells:
        path = out_dir / f"{cell}.npz"
        if path.exists():
            try:
                net = Network.load(path)
            except DDMError as exc:
                raise DDMError(f"{path} exists but is not a model ({exc}); move it away to "
                               "refit this cell") from None
            seconds = net.meta.get("sweep", {}).get("seconds")
            rows[cell] = _row(cell, name, N, seed, combo, net, seconds, path.name)
        else:
            todo.append((cell, N, seed, combo))
    say(f"sweep of {len(cells)} cells ({name}): {len(cells) - len(todo)} done before, "
        f"{len(todo)} to fit")
    ordered = lambda: [rows[c[0]] for c in cells if c[0] in rows]   # noqa: E731
    _write_table(table, ordered())
    if not todo:
        return ordered()
    distributed = _distributed()
    t0 = time.perf_counter()
    # compile before the tasks go out: here, for local workers (they share the on-disk cache);
    # every cell has the same kernels (one system, one set of options)
    say("compiling (or loading from numba's cache) the kernels the cells use ...")
    _warm(system, todo[0][3], options)
    with connect(workers, scheduler) as client:
        if scheduler is not None:                # remote workers: each warms once, at the start
            client.run(_warm, system, todo[0][3], options)
        futures = {}
        for cell, N, seed, combo in todo:
            fut = client.submit(_fit_cell, system, combo, N, seed, options, retries=retries,
                                pure=False, key=f"ddm-fit-{cell}-{os.getpid()}")
            futures[fut] = (cell, N, seed, combo)
        done = failed = 0
        for fut in distributed.as_completed(futures):
            cell, N, seed, combo = futures[fut]
            try:
                net, seconds = fut.result()
            except Exception as exc:           # a cell that keeps failing: a row, not a stop
                failed += 1
                rows[cell] = _row(cell, name, N, seed, combo,
                                  error=f"{type(exc).__name__}: {exc}"[:500])
                say(f"  {cell}: FAILED after {retries} retries: {type(exc).__name__}: {exc}")
            else:
                done += 1
                net.meta["sweep"] = {"cell": cell, "seconds": seconds, "params": combo}
                path = out_dir / f"{cell}.npz"
                net.save(path)
                rows[cell] = _row(cell, name, N, seed, combo, net, seconds, path.name)
                el = time.perf_counter() - t0
                left = len(todo) - done - failed
                say(f"  {done + failed}/{len(todo)} {cell}: e_f {net.meta['fit']['e_f']:.3g}, "
                    f"{seconds:.1f}s; ETA {el / (done + failed) * left:.0f}s")
            _write_table(table, ordered())
    say(f"sweep done in {time.perf_counter() - t0:.1f}s: {done} fitted, {failed} failed; "
        f"table {table}")
    return ordered()


def sample_sharded(model, trials, shard, workers=None, scheduler=None, target=False,
                   **options):
    """sample_network (or, with ``target``, sample_target of the System ``model``) over shards of
    ``shard`` trials on a Dask cluster, merged in trial order: equal, bit for bit, to one local
    run with the same arguments (each trial's own stream, docs/model.md §6). Returns
    Trajectories; meta.shards records the split."""
    from .simulate import Trajectories
    _distributed()                 # a clear error when the extra is missing
    trials, shard = int(trials), int(shard)
    if trials < 1 or shard < 1:
        raise DDMError("trials and the shard size must be at least 1")
    first = int(options.pop("first_trial", 0))
    if not target:
        options.setdefault("device", "cpu")
    options.pop("progress", None)
    starts = list(range(0, trials, shard))
    with connect(workers, scheduler) as client:
        futures = [client.submit(_sample_shard, model, min(shard, trials - a), first + a,
                                 options, target, retries=2, pure=False) for a in starts]
        parts = client.gather(futures)
    z = np.concatenate([p.z for p in parts])
    x = np.concatenate([p.x for p in parts]) if parts[0].x is not None else None
    meta = dict(parts[0].meta, first_trial=first, shards={"size": shard, "count": len(parts)})
    return Trajectories(parts[0].t, z, x, parts[0].u, meta)


def _sample_shard(model, trials, first_trial, options, target=False):
    """Trials first_trial … first_trial + trials − 1 of the network (or of the target System)."""
    from .simulate import sample_network, sample_target
    _one_thread()
    sampler = sample_target if target else sample_network
    return sampler(model, trials=trials, first_trial=first_trial, progress=None, **options)
