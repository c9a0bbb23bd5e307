"""``ddm``: fit and sample rate networks that embed a target SDE. A thin layer over ddm_numba."""
import json
import math
import os
import signal
import sys
import time
import warnings

import click

from ddm_numba import DDMError, __version__
from ddm_numba.backends import DEFAULT_DEVICE, DEVICES

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


def _fail(exc):
    click.echo(f"Error: {exc}", err=True)
    sys.exit(1)


class Finite(click.FloatRange):
    """A float option that must be finite (click's FloatRange lets nan and inf through)."""

    def convert(self, value, param, ctx):
        out = super().convert(value, param, ctx)
        if not math.isfinite(out):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return out


SEED = click.IntRange(0, 2**63 - 1)


def _check_out(path, what, suffix, inputs=(), option="--out"):
    """Before any work: the output ends right, is not a folder, can be written, and is none of
    the command's inputs (no command overwrites what it reads)."""
    if not path.endswith(suffix):
        raise click.BadParameter(f"{what} file must end in {suffix}, got {path!r}",
                                 param_hint=option)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise click.BadParameter(f"folder {folder!r} does not exist", param_hint=option)
    if os.path.isdir(path):
        raise click.BadParameter(f"{path!r} is a folder, not a file", param_hint=option)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.BadParameter(f"folder {folder!r} is not writable", param_hint=option)
    for name, source in inputs:
        if source and os.path.exists(source) and os.path.exists(path) and \
                os.path.samefile(source, path):
            raise click.BadParameter(f"{path!r} is the {name} this command reads; write to "
                                     "another file (no command overwrites its own input)",
                                     param_hint=option)


def _interrupted(exc):
    """One line for Ctrl-C/SIGTERM, and the exit code shells expect (130, 143)."""
    line = f"{exc}"
    if exc.partial:
        line += f"; best state so far saved in {exc.partial} (continue with --resume)"
    else:
        line += "; nothing written, earlier outputs untouched"
    click.echo(line, err=True)
    sys.exit(exc.exit_code)


def _warning_line(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line on stderr, not Python's two-line source echo."""
    click.echo(f"Warning: {message}", err=True)


class _Command(click.Command):
    """Every command runs with Ctrl-C and SIGTERM trapped (interrupt.trap): long work stops at
    its next safe point, and whatever escapes becomes one line and an exit code."""

    def invoke(self, ctx):
        from ddm_numba import interrupt
        warnings.showwarning = _warning_line
        try:
            with interrupt.trap((signal.SIGINT, signal.SIGTERM)):
                return super().invoke(ctx)
        except interrupt.Interrupted as exc:
            _interrupted(exc)
        except KeyboardInterrupt:
            _interrupted(interrupt.Interrupted(signal.SIGINT))
        except SystemError as exc:
            # a signal that numba's dispatcher met half-way ("returned a result with an
            # exception set"): still an interrupt, not a crash
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, KeyboardInterrupt):
                _interrupted(cause if isinstance(cause, interrupt.Interrupted)
                             else interrupt.Interrupted(signal.SIGINT))
            raise
        except (DDMError, OSError) as exc:
            _fail(exc)
        except MemoryError:
            _fail("out of memory; use fewer neurons, trials or a shorter run")


CONTEXT["max_content_width"] = 100


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="ddm")
def main():
    """Rate RNNs whose latent activity has the drift and diffusion of a target SDE.

    \b
    ddm systems                               list the built-in targets
    ddm fit double_well --out dw.npz          train a network
    ddm sample dw.npz --out traj.npz --plot dw.png
    """


@main.command(cls=_Command, context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def systems(as_json):
    """List the built-in target systems, their dimensions and parameters."""
    from ddm_numba.systems import list_systems
    infos = list_systems()
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    click.echo(f"{'name':16s} {'d':>2s} {'m':>2s} {'p':>2s}  parameters")
    for info in infos:
        params = ", ".join(f"{k}={v:g}" for k, v in info["params"].items())
        click.echo(f"{info['name']:16s} {info['d']:2d} {info['m']:2d} {info['p']:2d}  {params}")
        click.echo(f"{'':25s}{info['description']}")
    click.echo("\nA system of your own: ddm fit path/to/file.py:NAME (see README).")


def _params(values):
    from ddm_numba.systems import parse_params
    try:
        return parse_params(values)
    except DDMError as exc:
        raise click.BadParameter(str(exc), param_hint="--param") from None


@main.command(cls=_Command, context_settings=CONTEXT)
@click.argument("system", required=False)
@click.option("--data", default=None, metavar="TRAJ.npz",
              help="Fit to observed trajectories (keys t, z (trials, T, d)) instead of a SYSTEM.")
@click.option("--substeps", default=0, type=click.IntRange(0, 64),
              help="With --data: adjoint refinement with this many RK4 steps per sampling "
                   "interval (for coarse sampling; 0: increment matching only).")
@click.option("--holdout", default=0.2, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="With --data: fraction of trials held out for the penalty and the figures.")
@click.option("--state-noise", is_flag=True,
              help="With --data: fit a state-dependent diffusion S(x) = S0 + R φ(x).")
@click.option("--unweighted", is_flag=True,
              help="With --data: plain least squares on the increments (default: each "
                   "coordinate's increments weighted by its inverse noise variance, modelled "
                   "over the states: maximum likelihood when the noise depends on the state).")
@click.option("--truth", default=None, metavar="SYSTEM",
              help="With --data: the system that made the data, to score e_f and e_D against "
                   "(default: the one named in the file, if any).")
@click.option("--neurons", "-N", default=256, type=click.IntRange(1), help="Network size N.")
@click.option("--out", "-o", required=True, help="Model file to write (.npz).")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE",
              help="Override a system parameter (repeatable), e.g. --param sigma=0.5.")
@click.option("--mode", type=click.Choice(["lowrank", "full"]), default="lowrank",
              help="Low-rank W = M A, or full connectivity W (docs/model.md §3).")
@click.option("--seed", default=0, type=SEED, help="Random seed.")
@click.option("--tau", default=1.0, type=Finite(min=0, min_open=True),
              help="Neuronal time constant τ.")
@click.option("--samples", default=0, type=click.IntRange(0),
              help="Training samples K (0: 6000·d up to 32768, at least 4 per decoder "
                   "unknown N + 1 + p, at most 65536).")
@click.option("--max-iter", default=None, type=click.IntRange(0),
              help="L-BFGS-B iterations [default: 100 with varpro; with joint 300 for N >= "
                   "256, 76800/N for smaller networks, at most 3000; with --data: 300].")
@click.option("--reg", default=None, type=Finite(min=0),
              help="Ridge penalty on decoders, relative to the drift's scale [default: 1e-10; "
                   "with --data: chosen on held-out trials].")
@click.option("--fixed-embedding", is_flag=True,
              help="Keep the random embedding M, c: decoders by ridge regression only.")
@click.option("--mask", default=None, metavar="FILE.npz|random:p=P|distance:p=P",
              help="Full mode: which connections may exist (a boolean N×N 'mask' in a .npz, or "
                   "a generator seeded by --seed: random with density P, or distance: local "
                   "wiring on a torus, density about P); W is exactly zero elsewhere.")
@click.option("--dale", type=click.FloatRange(0, 1), default=None,
              metavar="FRACTION_EXCITATORY", help="Dale's law with this fraction of excitatory "
              "neurons: full mode with signed columns of W; low rank with W = M A, M >= 0 and "
              "signed columns of A (trained jointly).")
@click.option("--sigma-private", default=0.0, type=Finite(min=0),
              help="Private noise σ_p on every neuron.")
@click.option("--device", type=click.Choice(DEVICES), default=DEFAULT_DEVICE,
              help="Where the drift's loss+gradient and Gram passes run (auto: CUDA when a GPU "
                   "is usable; the diffusion stage runs on the CPU).")
@click.option("--checkpoint", default=None, metavar="CKPT.npz",
              help="Keep the best parameters so far in this file while optimizing (every 30 s "
                   "and on Ctrl-C), to continue later with --resume.")
@click.option("--resume", default=None, metavar="CKPT.npz",
              help="Continue a fit from a --checkpoint file (same system and settings).")
@click.option("--visited", default=0.7, type=click.FloatRange(0, 1), show_default=True,
              help="Fraction of the training states taken from the target's own runs (started "
                   "in the box, after a burn-in); the rest is uniform over the box. 0: box only.")
@click.option("--visit-runs", default=64, type=click.IntRange(1, 100000), show_default=True,
              help="Target runs that collect the visited states (a third more are run for "
                   "held-out states).")
@click.option("--check-time", default=None, type=Finite(min=0),
              help="Time per trial of the self-check that samples network and target after "
                   "the fit [default: the system's duration, at most 10000 steps]; 0: no check.")
@click.option("--method", type=click.Choice(["auto", "varpro", "joint"]), default="auto",
              show_default=True,
              help="Low-rank drift training: varpro (embedding optimized, decoders solved "
                   "exactly inside the objective), joint (L-BFGS-B over both), auto (varpro up "
                   "to 128 neurons, joint above).")
@click.option("--online", "online_time", default=None, type=Finite(min=0, min_open=True),
              metavar="TIME",
              help="Learn the decoders online instead, for TIME time units of teacher forcing: "
                   "an online rule on the drift error while the target drives the network, the "
                   "diffusion from the residual second moments (docs/learning.md §6). Low rank, "
                   "fixed random embedding, no inputs.")
@click.option("--online-trials", default=64, show_default=True, type=click.IntRange(1, 100000),
              help="With --online: teacher paths run in parallel.")
@click.option("--online-rule", type=click.Choice(["rls", "delta"]), default="rls",
              show_default=True,
              help="With --online: rls (recursive least squares, FORCE's rule: error × a "
                   "presynaptic trace, O(N²) a state, reaches the batch decoders) or delta "
                   "(the normalized delta rule, strictly synapse-local, O(N), slow to converge).")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def fit(system, data, substeps, holdout, state_noise, unweighted, truth, neurons, out, params, mode, seed,
        tau, samples, max_iter, reg, fixed_embedding, mask, dale, sigma_private, device,
        checkpoint, resume, visited, visit_runs, check_time, method, online_time, online_trials,
        online_rule, quiet):
    """Train a network of N neurons whose latent drift and diffusion match SYSTEM, or (--data)
    observed trajectories of an unknown system.

    SYSTEM is a built-in name (see `ddm systems`), path/to/file.py:NAME or package.module:NAME.
    """
    from ddm_numba import fit as fit_network, get_system
    _check_out(out, "model", ".npz", [("data file", data), ("checkpoint", resume)])
    if checkpoint is not None:
        _check_out(checkpoint, "checkpoint", ".npz", [("data file", data)],
                   option="--checkpoint")
        if os.path.abspath(checkpoint) == os.path.abspath(out):
            raise click.BadParameter("the checkpoint must be another file than --out",
                                     param_hint="--checkpoint")
    if (checkpoint or resume) and data is not None:
        raise click.UsageError("--checkpoint and --resume are for fits to a SYSTEM")
    if (system is None) == (data is None):
        raise click.UsageError("give either SYSTEM or --data TRAJ.npz (not both)")
    if mask is not None and mode != "full":
        raise click.BadParameter("a connectivity mask needs --mode full", param_hint="--mask")
    if data is None:
        for name, value in (("--substeps", substeps), ("--state-noise", state_noise),
                            ("--unweighted", unweighted), ("--truth", truth)):
            if value:
                raise click.BadParameter("only with --data", param_hint=name)
    elif mode != "lowrank" or params or samples or fixed_embedding or sigma_private:
        raise click.UsageError("with --data only low-rank networks are fitted; --mode, --param, "
                               "--samples, --fixed-embedding and --sigma-private do not apply")
    elif (method != "auto" or check_time is not None or visited != 0.7 or visit_runs != 64):
        raise click.UsageError("--method, --visited, --visit-runs and --check-time are for fits "
                               "to a SYSTEM (with --data the states are the data's own)")
    progress = None if quiet else sys.stderr
    from ddm_numba._jit import compile_notices
    compile_notices(progress)
    if online_time is None and (online_trials != 64 or online_rule != "rls"):
        raise click.UsageError("--online-trials and --online-rule are for --online TIME")
    if online_time is not None:
        if data is not None or mode != "lowrank" or mask or dale is not None or checkpoint \
                or resume or fixed_embedding or sigma_private or samples:
            raise click.UsageError("--online learns a low-rank network's decoders from a "
                                   "SYSTEM; --data, --mode full, --mask, --dale, --checkpoint, "
                                   "--resume, --samples, --fixed-embedding and --sigma-private "
                                   "do not apply")
        from ddm_numba.online import fit_online
        net = fit_online(get_system(system, **_params(params)), neurons, seed=seed, tau=tau,
                         time_total=online_time, trials=online_trials, rule=online_rule,
                         progress=progress)
        net.save(out)
        click.echo(f"wrote {out}: online-learned lowrank network, N={net.N}, d={net.d}; "
                   f"{_fit_summary(net.meta)}; {net.meta['training']['seconds']:.1f}s")
        return
    if data is not None:
        from ddm_numba.learn import fit_data
        net = fit_data(data, neurons, seed=seed, tau=tau, holdout=holdout, reg=reg,
                       substeps=substeps, refine_iter=300 if max_iter is None else max_iter,
                       state_noise=state_noise, weighted=not unweighted,
                       truth=truth, progress=progress, device=device)
    else:
        target = get_system(system, **_params(params))
        net = fit_network(target, neurons, mode=mode, seed=seed, tau=tau,
                          samples=samples or None, max_iter=max_iter,
                          reg=1e-10 if reg is None else reg, fixed_embedding=fixed_embedding,
                          dale=dale, sigma_private=sigma_private, progress=progress,
                          device=device, checkpoint=checkpoint, resume=resume,
                          visited=visited, visit_runs=visit_runs, self_check_time=check_time,
                          method=method, mask=mask)
    if not quiet:
        click.echo(f"device: {net.meta['training']['device_reason']}", err=True)
    net.save(out)
    click.echo(f"wrote {out}: {net.mode} network, N={net.N}, d={net.d}; "
               f"{_fit_summary(net.meta)}; {net.meta['training']['seconds']:.1f}s")


def _fit_summary(meta):
    """The figures of fit a user should read first: held-out on the states the dynamics visits,
    on the box apart, and the self-check's verdict."""
    figs = meta.get("fit", {})
    where = figs.get("held_out_on", "held-out states")
    parts = [f"{k} = {figs[k]:.3g}" for k in ("e_f", "e_D", "off_manifold_rel")
             if isinstance(figs.get(k), float)]
    text = f"held-out ({where}): " + ", ".join(parts)
    box = [f"{k[:-4]} = {figs[k]:.3g}" for k in ("e_f_box", "e_D_box") if k in figs]
    if box and where != "box":
        text += "; on the box: " + ", ".join(box)
    check = meta.get("self_check")
    if check:
        text += f"; self-check: {check['verdict']}"
    return text


SYSTEM_HELP = ("The target, when MODEL was fitted to your own system: path/to/file.py:NAME or "
               "package.module:NAME. Files never load code by themselves, so a model of a user "
               "system needs it named here; built-in targets resolve by name.")


@main.command(cls=_Command, context_settings=CONTEXT)
@click.argument("model")
@click.option("--out", "-o", default=None, help="Trajectory file to write (.npz); not needed "
              "with --stats.")
@click.option("--trials", default=100, type=click.IntRange(1), help="Independent trials.")
@click.option("--time", "duration", default=100.0, type=Finite(min=0, min_open=True),
              help="Simulated time per trial.")
@click.option("--seed", default=0, type=SEED, help="Random seed.")
@click.option("--first-trial", default=0, type=click.IntRange(0, 2**62), show_default=True,
              help="Index of the first trial: trials [A, A + --trials) of a run with this seed, "
                   "bit for bit the same rows as in one bigger run (to split a run in shards).")
@click.option("--dt", default=0.0, type=Finite(min=0),
              help="Euler–Maruyama step (0: the system's suggested step).")
@click.option("--record-every", default=0, type=click.IntRange(0),
              help="Record every k steps (0: about every 0.05 time units).")
@click.option("--input", "inputs", multiple=True, metavar="T0:T1:U1,U2",
              help="Constant input u on [T0, T1) (repeatable).")
@click.option("--save-neurons", is_flag=True, help="Also record the neurons' states x.")
@click.option("--target", is_flag=True, help="Sample the model's target SDE instead.")
@click.option("--system", "system_spec", default=None, metavar="FILE.py:NAME", help=SYSTEM_HELP)
@click.option("--plot", default=None, help="Write a PNG: traces and stationary histograms, "
              "network beside target.")
@click.option("--burn-in", default=-1.0, type=Finite(),
              help="Time discarded before the stationary histogram (<0: 10% of --time).")
@click.option("--device", type=click.Choice(DEVICES), default=DEFAULT_DEVICE,
              help="Where the network runs (auto: CUDA when a GPU is usable, else CPU).")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64",
              help="Precision of the network's state (float32 on CUDA only).")
@click.option("--stats", "stats_out", default=None, metavar="STATS.json",
              help="Keep no paths: write streaming statistics of the trials (moments, "
                   "histograms, autocorrelation, wells, e_p; after --burn-in) to this JSON, "
                   "sampling --shard trials at a time in bounded memory.")
@click.option("--shard", default=10000, show_default=True, type=click.IntRange(1),
              help="With --stats: trials per shard (memory is one shard's paths); with "
                   "--workers/--scheduler: trials per task.")
@click.option("--bins", default=50, show_default=True, type=click.IntRange(1, 10000),
              help="With --stats: histogram bins per coordinate over the model's box.")
@click.option("--max-lag", default=0, show_default=True, type=click.IntRange(0),
              help="With --stats: autocorrelation up to this many records.")
@click.option("--wells", default=None, metavar="C1;C2;...",
              help="With --stats: well centres, coordinates by commas, wells by semicolons "
                   "(e.g. -1;1, or 0,0;1,1): occupancy, switches and first-passage times.")
@click.option("--well-radius", default=None, type=Finite(min=0, min_open=True),
              help="With --wells: a state within this distance of a centre is in its well "
                   "[default: half the distance between the closest two centres].")
@click.option("--epr", is_flag=True,
              help="With --stats: the ensemble entropy production E[2fᵀD⁻¹f + ∇·f] of the "
                   "network's latent SDE over the trials (needs a constant diffusion).")
@click.option("--workers", default=None, type=click.IntRange(1),
              help="Sample in shards of --shard trials on this many local Dask workers (the "
                   "same paths or statistics as one local run).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Sample the shards on the Dask cluster at ADDRESS instead.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def sample(model, out, trials, duration, seed, first_trial, dt, record_every, inputs,
           save_neurons, target, system_spec, plot, burn_in, device, dtype, stats_out, shard,
           bins, max_lag, wells, well_radius, epr, workers, scheduler, quiet):
    """Simulate MODEL's network (or, with --target, its target SDE) with Euler–Maruyama.

    Progress goes to stderr on long runs; Ctrl-C stops within a fraction of a second and writes
    nothing. Outputs are written only when everything, the plot included, has been computed.
    With --stats no paths are kept (any number of trials, in shards; on Dask workers with
    --workers or --scheduler, with the same sums as one local run).
    """
    if stats_out is not None:
        if out is not None or plot or save_neurons:
            raise click.UsageError("--stats keeps no paths: leave out --out, --plot and "
                                   "--save-neurons")
        run = dict(trials=trials, duration=duration, seed=seed, first_trial=first_trial, dt=dt,
                   record_every=record_every, inputs=inputs, target=target,
                   system_spec=system_spec, burn_in=burn_in, device=device, dtype=dtype)
        return _sample_stats(model, stats_out, run, (shard, bins, max_lag, wells, well_radius,
                                                     epr, workers, scheduler), quiet)
    if out is None:
        raise click.UsageError("give --out TRAJ.npz (or --stats STATS.json to keep no paths)")
    sharded = workers is not None or scheduler is not None
    if sharded and plot:
        raise click.UsageError("--plot samples network and target together here; leave out "
                               "--workers/--scheduler, or plot from the files")
    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers or --scheduler, not both")
    from ddm_numba import load_model
    from ddm_numba._jit import compile_notices
    from ddm_numba.network import atomic_write
    from ddm_numba.resources import human
    from ddm_numba.simulate import (MAX_RECORD_BYTES, run_steps, parse_input, sample_network,
                                    sample_pair, sample_target, target_of)
    _check_out(out, "trajectory", ".npz", [("model", model)])
    if plot:
        _check_out(plot, "plot", ".png", [("model", model)], option="--plot")
    if target and save_neurons:
        raise click.BadParameter("the target SDE has no neurons", param_hint="--save-neurons")
    if plot and burn_in >= duration:
        raise click.BadParameter(f"the burn-in {burn_in:g} leaves nothing of --time "
                                 f"{duration:g} for the histograms", param_hint="--burn-in")
    progress = None if quiet else sys.stderr
    compile_notices(progress)
    net = load_model(model)
    try:
        schedule = [parse_input(text, net.p) for text in inputs]
    except DDMError as exc:
        raise click.BadParameter(str(exc), param_hint="--input") from None
    system = target_of(net, system_spec) if (target or plot or system_spec) else None
    step = dt or (system.dt if target else net.meta.get("system", {}).get("dt", 0.01))
    n_steps, every = run_steps(duration, step, record_every or None)   # checks them too
    n_rec = n_steps // every + 1
    size = trials * n_rec * (net.d + (net.N if save_neurons else 0)) * 8
    if 100e6 < size <= MAX_RECORD_BYTES and progress is not None:
        click.echo(f"{out} will hold about {human(size)} ({trials} trials × {n_rec} records)",
                   err=True)
    kw = dict(trials=trials, time=duration, seed=seed, dt=dt or None,
              record_every=record_every or None, inputs=schedule, progress=progress,
              first_trial=first_trial)
    t0 = time.perf_counter()
    if plot:        # the plot sets the network beside the target: one pair, same seeds
        pair = sample_pair(net, system, save_neurons=save_neurons, device=device, dtype=dtype,
                           **kw)
        traj = pair.target if target else pair.network
    elif sharded:   # shards of --shard trials on Dask workers, merged in trial order
        from ddm_numba.cluster import sample_sharded
        kw.pop("progress")
        extra = {} if target else dict(save_neurons=save_neurons, device=device, dtype=dtype)
        traj = sample_sharded(system if target else net, trials, shard, workers=workers,
                              scheduler=scheduler, target=target,
                              **{k: v for k, v in kw.items() if k != "trials"}, **extra)
    elif target:
        traj = sample_target(system, **kw)
    else:
        traj = sample_network(net, save_neurons=save_neurons, device=device, dtype=dtype, **kw)
    seconds = time.perf_counter() - t0
    if progress is not None and not target:
        click.echo(f"device: {traj.meta['device_reason']}", err=True)
    png = None
    if plot:
        b = burn_in if burn_in >= 0 else 0.1 * duration
        from ddm_numba.plotting import plot_comparison
        png = plot_comparison(None, [("network", pair.network), ("target", pair.target)], b,
                              title=f"{system.name}: N={net.N} {net.mode} network vs target, "
                              "same seeds")
    # everything computed: now the files (the trajectory, then the plot, each atomic)
    traj.save(out)
    click.echo(f"wrote {out}: {traj.z.shape[0]} trials × {traj.z.shape[1]} records of "
               f"{'the target' if target else 'the network'} in {seconds:.1f}s")
    if png is not None:
        atomic_write(plot, lambda fh: fh.write(png))
        click.echo(f"wrote {plot}")


def _parse_wells(text, d):
    try:
        centres = [[float(v) for v in w.split(",")] for w in text.split(";") if w.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: numbers separated by commas, wells by semicolons",
                                 param_hint="--wells") from None
    if not centres or any(len(c) != d for c in centres):
        raise click.BadParameter(f"{text!r}: each centre needs {d} coordinates", param_hint="--wells")
    return centres


def _sample_stats(model, stats_out, run, stats_options, quiet):
    """ddm sample --stats: the shards' statistics, no paths (stats.sample_stats). run: the
    sampling options of `ddm sample` by name; stats_options: the --stats ones, in order."""
    from ddm_numba import load_model
    from ddm_numba._jit import compile_notices
    from ddm_numba.simulate import parse_input, target_of
    from ddm_numba.stats import EnsembleEprTerms, Stats, sample_stats
    shard, bins, max_lag, wells, well_radius, epr, workers, scheduler = stats_options
    trials, duration, target, burn_in = run["trials"], run["duration"], run["target"], \
        run["burn_in"]
    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers or --scheduler, not both")
    _check_out(stats_out, "statistics", ".json", [("model", model)], option="--stats")
    progress = None if quiet else sys.stderr
    compile_notices(progress)
    net = load_model(model)
    try:
        schedule = [parse_input(text, net.p) for text in run["inputs"]]
    except DDMError as exc:
        raise click.BadParameter(str(exc), param_hint="--input") from None
    system = target_of(net, run["system_spec"]) if target else None
    box = system.domain if target else net.meta.get("system", {}).get("domain",
                                                                      [[-1.0, 1.0]] * net.d)
    if epr and target:
        raise click.UsageError("--epr is the network's (its f, ∇·f and D); leave out --target")
    stats = Stats(box, bins=bins, max_lag=max_lag,
                  burn_in=burn_in if burn_in >= 0 else 0.1 * duration,
                  wells=_parse_wells(wells, net.d) if wells else None, well_radius=well_radius,
                  epr=EnsembleEprTerms(net) if epr else None)
    options = dict(time=duration, seed=run["seed"], dt=run["dt"] or None,
                   record_every=run["record_every"] or None, inputs=schedule,
                   first_trial=run["first_trial"])
    if not target:
        options.update(device=run["device"], dtype=run["dtype"])
    t0 = time.perf_counter()
    sample_stats(system if target else net, trials, shard, stats, workers=workers,
                 scheduler=scheduler, progress=progress, target=target, **options)
    stats.save(stats_out)
    click.echo(f"wrote {stats_out}: statistics of {stats.trials} trials "
               f"({stats.count} records after the burn-in) in {time.perf_counter() - t0:.1f}s")


@main.command(cls=_Command, context_settings=CONTEXT)
@click.argument("system")
@click.option("--neurons", "-N", "neurons", default="256", show_default=True,
              metavar="N[,N...]", help="Network sizes, comma-separated.")
@click.option("--seeds", default="0", show_default=True, metavar="A:B | S[,S...]",
              help="Seeds: a range A:B (A, ..., B-1) or a list.")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=V1[,V2...]",
              help="A system parameter and the values to sweep (repeatable; the cells are the "
                   "product of all of them with --neurons and --seeds).")
@click.option("--out", "-o", "out_dir", required=True, metavar="DIR",
              help="Folder for one model per cell (<cell>.npz) and results.csv; a cell whose "
                   "file is there already is not fitted again (resume).")
@click.option("--workers", default=None, type=click.IntRange(1),
              help="Local worker processes, one thread each [default: 2].")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786) "
                   "instead of local workers.")
@click.option("--retries", default=2, show_default=True, type=click.IntRange(0, 10),
              help="Retries of a cell that fails or whose worker dies; then the cell's row "
                   "records the error and the sweep goes on.")
@click.option("--mode", type=click.Choice(["lowrank", "full"]), default="lowrank",
              help="Low-rank W = M A, or full connectivity W.")
@click.option("--tau", default=1.0, type=Finite(min=0, min_open=True),
              help="Neuronal time constant τ.")
@click.option("--samples", default=0, type=click.IntRange(0), help="Training samples K (0: "
              "fit's default).")
@click.option("--max-iter", default=None, type=click.IntRange(0),
              help="L-BFGS-B iterations [default: fit's, which follows N].")
@click.option("--method", type=click.Choice(["auto", "varpro", "joint"]), default="auto",
              show_default=True, help="Low-rank drift training (see ddm fit --help).")
@click.option("--sigma-private", default=0.0, type=Finite(min=0),
              help="Private noise σ_p on every neuron.")
@click.option("--check-time", default=None, type=Finite(min=0),
              help="Time per trial of each cell's self-check [default: fit's]; 0: none.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def sweep(system, neurons, seeds, params, out_dir, workers, scheduler, retries, mode, tau,
          samples, max_iter, method, sigma_private, check_time, quiet):
    """Fit SYSTEM for every cell of --neurons × --param values × --seeds on Dask workers.

    \b
    Each cell is one task; its model goes to DIR/<cell>.npz, e.g.
    DIR/limit_cycle_N64_seed3.npz, and DIR/results.csv gets one row per cell (system,
    neurons, seed, params, status, e_f, e_D, self-check verdict, seconds, file, error),
    rewritten as cells finish. Rerun the same command to resume: finished cells are read
    back, not refitted. Needs the extra: pip install "ddm_numba[cluster]".
    """
    from ddm_numba.cluster import parse_range, parse_sweep_params, sweep as run_sweep
    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers or --scheduler, not both")
    try:
        sizes = parse_range(neurons, "--neurons")
        seed_list = parse_range(seeds, "--seeds")
        values = parse_sweep_params(params)
    except DDMError as exc:
        raise click.UsageError(str(exc)) from None
    options = dict(mode=mode, tau=tau, samples=samples or None, max_iter=max_iter,
                   method=method, sigma_private=sigma_private, self_check_time=check_time)
    rows = run_sweep(system, sizes, seed_list, out_dir, params=values, workers=workers,
                     scheduler=scheduler, retries=retries,
                     progress=None if quiet else sys.stderr, **options)
    failed = [r for r in rows if r["status"] == "failed"]
    click.echo(f"wrote {out_dir}/results.csv: {len(rows) - len(failed)} cells fitted"
               + (f", {len(failed)} failed (see the error column)" if failed else ""))
    if failed:
        sys.exit(3)


@main.command(cls=_Command, context_settings=CONTEXT)
@click.option("--dims", default="1,2,3", show_default=True, metavar="D[,D...]",
              help="Latent dimensions to compile for.")
def warmup(dims):
    """Compile numba's kernels ahead of use, so that later first runs start at once.

    \b
    Runs tiny fits (low-rank and full), samples and a fit from data for each latent
    dimension; numba caches the compiled code on disk. Run it once after installing (or
    on each new Dask worker image). Progress goes to stderr.
    """
    from ddm_numba.warmup import warmup as run_warmup
    try:
        wanted = [int(v) for v in dims.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{dims!r} is not a list of integers such as 1,2,3",
                                 param_hint="--dims") from None
    from ddm_numba._jit import compile_notices
    compile_notices(sys.stderr)
    info = run_warmup(wanted, progress=sys.stderr)
    click.echo(f"compiled for d = {', '.join(map(str, info['dims']))} in {info['seconds']:.1f}s")


@main.command(cls=_Command, context_settings=CONTEXT)
@click.argument("model")
@click.option("--out", "-o", default=None,
              help="Folder for report.json and the figures (default: MODEL's name + _analysis).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the report as JSON on stdout instead of a table.")
@click.option("--trials", default=100, type=click.IntRange(2), help="Trials sampled per side.")
@click.option("--time", "duration", default=0.0, type=Finite(min=0),
              help="Simulated time per trial (0: the target's suggested duration).")
@click.option("--seed", default=0, type=SEED, help="Random seed.")
@click.option("--dt", default=0.0, type=Finite(min=0),
              help="Euler–Maruyama step of the sampling (0: the system's suggested step).")
@click.option("--grid", default=0, type=click.IntRange(0),
              help="Fokker–Planck cells per axis for d ≤ 2 (0: 200 in 2-D, 400 in 1-D; e_p is also computed at half of it for Richardson).")
@click.option("--lyapunov-time", default=1000.0, show_default=True, type=Finite(min=0),
              help="Time budget of the largest Lyapunov exponent (d ≥ 3): it integrates until "
                   "its standard error is ≤ --lyapunov-rtol × |λ|, at most this long.")
@click.option("--lyapunov-rtol", default=0.02, show_default=True, type=Finite(min=0),
              help="Target relative standard error of the Lyapunov exponent.")
@click.option("--no-figures", is_flag=True, help="Skip the PNG figures.")
@click.option("--system", "system_spec", default=None, metavar="FILE.py:NAME", help=SYSTEM_HELP)
@click.option("--device", type=click.Choice(DEVICES), default=DEFAULT_DEVICE,
              help="Where the network is sampled (auto: CUDA when a GPU is usable).")
def analyze(model, out, as_json, trials, duration, seed, dt, grid, lyapunov_time, lyapunov_rtol,
            no_figures, system_spec, device):
    """How MODEL's network does what its target does.

    \b
    Connectivity (W = W_s + W_a, spectra, decoder alignment), entropy production
    and probability currents (closed form, Fokker–Planck grid for d <= 2, ensemble
    formula, trajectory estimators), fixed points and their stability, Lyapunov
    exponent (d >= 3), and distances network vs target. Writes OUT/report.json and
    PNG figures; prints a table (or the JSON with --json). Progress goes to stderr.
    """
    from ddm_numba.analysis.render import format_report
    from ddm_numba.analysis.report import analyze as run_analysis
    if out is None:
        base = os.path.basename(model)
        out = (base[:-4] if base.endswith(".npz") else base) + "_analysis"
    if grid and grid < 8:
        raise click.BadParameter("use at least 8 cells per axis", param_hint="--grid")
    if lyapunov_time <= 0:
        raise click.BadParameter("the time budget must be > 0", param_hint="--lyapunov-time")
    if not 0 < lyapunov_rtol < 1:
        raise click.BadParameter("use a relative error between 0 and 1, e.g. 0.02",
                                 param_hint="--lyapunov-rtol")
    if os.path.exists(out) and not os.path.isdir(out):
        raise click.BadParameter(f"{out!r} exists and is not a folder", param_hint="--out")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise click.BadParameter(f"folder {parent!r} does not exist", param_hint="--out")
    if not os.access(out if os.path.isdir(out) else parent, os.W_OK | os.X_OK):
        raise click.BadParameter(f"{out!r} is not writable", param_hint="--out")
    if os.path.isfile(model) and os.path.isdir(out) and os.path.samefile(os.path.dirname(os.path.abspath(model)) or ".",
                                                  os.path.abspath(out)) and \
            os.path.basename(model) in ("report.json", "connectivity.png", "flow.png",
                                        "irreversibility.png", "trajectories.png", "parts.png"):
        raise click.BadParameter(f"{model!r} would be overwritten by the report",
                                 param_hint="--out")
    from ddm_numba._jit import compile_notices
    compile_notices(sys.stderr)
    report = run_analysis(model, out, trials=trials, time=duration or None, seed=seed,
                          dt=dt or None, grid=grid or None, figures=not no_figures,
                          lyapunov_time=lyapunov_time, lyapunov_rtol=lyapunov_rtol,
                          system=system_spec, progress=sys.stderr, device=device)
    if as_json:
        click.echo(json.dumps(report, indent=1, sort_keys=True))
    else:
        click.echo(format_report(report))
        click.echo(f"\nwrote {os.path.join(out, 'report.json')}"
                   + "".join(f", {f}" for f in report.get("figures", [])))


if __name__ == "__main__":
    main()
