"""Compile the kernels ahead of use: `ddm warmup`.

numba compiles a kernel on its first call with each new set of argument types, and caches the
machine code on disk (``cache=True``), so only the first run of each kind pays. That first run
can take tens of seconds (18 s for the low-rank loss alone at a new latent dimension), in the
middle of a user's job or of every fresh Dask worker. ``warmup`` runs each kind of job once at a
tiny size — the real code paths, so the argument types are exactly the ones real runs use —
for every latent dimension asked for: fits (low-rank by VarPro and jointly, full), sampling of
networks (with and without recorded neurons), learning from data with the refinement and the
state-dependent noise, and (once) a fit of a state-dependent diffusion. Afterwards a first real job of those kinds loads the cache instead of
compiling.
"""
import time

from .errors import DDMError

# a built-in target for each latent dimension (their fits cover the kernels' specialisations)
TARGETS = {1: "double_well", 2: "ou2d", 3: "lorenz"}


def warmup(dims=(1, 2, 3), progress=None):
    """Run tiny fits, samples and fits from data for each latent dimension in ``dims``; return
    {"dims": [...], "seconds": s}. Results are thrown away; only numba's cache keeps them."""
    from .learn import fit_data
    from .matching import fit
    from .simulate import sample_network, sample_target

    def say(msg):
        if progress is not None:
            print(msg, file=progress, flush=True)

    dims = sorted({int(d) for d in dims})
    bad = [d for d in dims if d not in TARGETS]
    if bad:
        raise DDMError(f"warmup knows latent dimensions {sorted(TARGETS)}, not {bad}")
    t0 = time.perf_counter()
    for d in dims:
        name = TARGETS[d]
        say(f"warmup d = {d} ({name}): fits, sampling, learning from data")
        tiny = dict(seed=0, max_iter=2, progress=None, self_check_time=0, visit_runs=4,
                    device="cpu")
        net = fit(name, 4 * d + 4, **tiny)
        fit(name, 4 * d + 4, mode="full", **tiny)
        fit(name, 4 * d + 4, method="joint", **tiny)
        sample_network(net, trials=2, time=0.05, seed=0, device="cpu")
        sample_network(net, trials=2, time=0.05, seed=0, device="cpu", save_neurons=True)
        data = sample_target(name, trials=4, time=20.0, seed=0, record_every=5)
        fit_data(data, 4 * d + 4, seed=0, substeps=2, refine_iter=1, state_noise=True,
                 progress=None, device="cpu")
        del data
        if d == 1:      # the diffusion stage with a state-dependent S(x) (one compilation)
            fit("multiplicative", 8, **tiny)
    seconds = time.perf_counter() - t0
    say(f"warmup done in {seconds:.1f}s")
    return {"dims": dims, "seconds": seconds}
