"""Rendering of a `ddm analyze` report: its JSON-able form and the text table on stdout."""
import numpy as np


# -- report.json ------------------------------------------------------------------------------

def to_json(obj):
    """numpy → lists, complex → [re, im], non-finite floats → None; dicts and lists recursively."""
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json(obj.tolist())
    if isinstance(obj, (complex, np.complexfloating)):
        return [to_json(float(obj.real)), to_json(float(obj.imag))]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return to_json(vars(obj))
    return obj


# -- the table on stdout ----------------------------------------------------------------------

def _num(v, err=None):
    if v is None:
        return "—"
    if isinstance(v, list) and len(v) == 2:    # complex as [re, im]
        return f"{v[0]:.3g}{v[1]:+.3g}i"
    s = f"{v:.4g}"
    return s + (f" ± {err:.2g}" if err else "")


def format_report(report):
    """The report as a readable text table (what `ddm analyze` prints)."""
    lines = []
    model = report["model"]
    sysname = model.get("system", {}).get("name", "?")
    lines.append(f"ddm analyze: target {sysname}; {model['mode']} network N={model['N']} "
                 f"d={model['d']} tau={model['tau']:g}")
    fit = model.get("fit", {})
    if fit:
        where = fit.get("held_out_on", "held-out states")
        lines.append(f"  fit (held-out, {where}): " + ", ".join(
            f"{k} {_num(v)}" for k, v in fit.items() if isinstance(v, (int, float))))
    check = model.get("self_check")
    if check:
        lines.append(f"  self-check at fit time: {check.get('verdict')}" +
                     (f" (worst distribution {check['tv_ratio_max']:.1f}× its sampling floor, "
                      f"{check['trials']} trials × {check['time']:g} time units)"
                      if check.get("tv_ratio_max") is not None else ""))
        for problem in check.get("problems", [])[:5]:
            lines.append(f"    - {problem}")
    conn = report["connectivity"]
    lines.append("\nconnectivity")
    lines.append(f"  asymmetry ‖W_a‖/‖W‖      {_num(conn['asymmetry']['a'])}"
                 f"    symmetry index η  {_num(conn['asymmetry']['eta'])}    rank {conn['rank']}")
    lines.append("  eig latent connectivity  " + ", ".join(_num(v) for v in
                                                         conn["eig_latent_connectivity"]))
    if "decoder_alignment" in conn:
        alignment = conn["decoder_alignment"]
        lines.append(f"  decoder alignment        weighted |cos(a_i, D m_i)| "
                     f"{_num(alignment['weighted_abs_cos'])} (1 = reversible latent dynamics)")
    if "off_manifold_rel" in conn:
        lines.append(f"  off-manifold drift       {_num(conn['off_manifold_rel'])} of the drift")

    entropy = report["irreversibility"]
    sides = list(entropy)
    settings = report["settings"]
    lines.append("\nentropy production e_p    " + "".join(f"{s:>22s}" for s in sides))
    lines.append(f"  (samples: {settings['trials']} trials × {settings['time']:g}, Euler–Maruyama "
                 f"dt = {settings['dt']:g}, burn-in {settings['burn_in']:g};\n   sample-based "
                 "values carry its O(dt) bias)")

    def traj(key):
        return lambda e: (e.get("trajectory", {}).get(key, {}).get("epr"),
                          e.get("trajectory", {}).get(key, {}).get("stderr"))

    def null(key):
        return lambda e: (e.get("trajectory", {}).get(key, {}).get("shuffled_null"), None)

    def lower(key):
        """Marked "≥ " in the table: report.json says "bound": "lower" (a lower bound of e_p)."""
        return any(entropy[s].get("trajectory", {}).get(key, {}).get("bound") == "lower"
                   for s in entropy)

    rows = [("closed form", lambda e: (e.get("closed_form", {}).get("epr"), None)),
            ("grid (Richardson)", lambda e: (e.get("grid", {}).get("epr_richardson"), None)),
            ("grid (finest)", lambda e: (e.get("grid", {}).get("epr"), None)),
            ("ensemble E[2fD⁻¹f + ∇·f]", lambda e: (e.get("ensemble", {}).get("epr"),
                                                  e.get("ensemble", {}).get("stderr")))]
    for key, name in (("ar1", "AR(1) fit"), ("lagged_covariance", "lagged covariance"),
                      ("gaussian_kl", "Gaussian KL rate")):
        rows += [(("≥ " if lower(key) else "") + name, traj(key)),
                 ("  shuffled null", null(key))]
    for name, get in rows:
        vals = [get(entropy[s]) for s in sides]
        if all(v[0] is None for v in vals):
            continue
        lines.append(f"  {name:24s}" + "".join(f"{_num(*v):>22s}" for v in vals))
    if any(lower(key) for key in ("ar1", "lagged_covariance", "gaussian_kl")):
        lines.append("  (≥: a lower bound of e_p — the e_p of the best linear-Gaussian fit to the "
                     "trajectories;\n   for a nonlinear system it can be far below the grid or "
                     "ensemble value)")
    for s in sides:
        if "note" in entropy[s]:
            lines.append(f"  ({entropy[s]['note']})")
            break
    for s in sides:
        skipped = entropy[s].get("grid", {}).get("skipped")
        if skipped:
            lines.append(f"  ({s} grid skipped: {skipped})")
    for s in sides:
        warn = entropy[s].get("ensemble", {}).get("warning")
        if warn:
            lines.append(f"  ! {s} ensemble: {warn}")
    split_grid = entropy.get("network", {}).get("split_grid")
    split = entropy.get("network", {}).get("split_ensemble")
    if split_grid:
        lines.append("  network e_p along W = W_s + W_a (grid): e_p,s "
                     f"{_num(split_grid['symmetric'])}, e_p,a {_num(split_grid['antisymmetric'])}")
    if split:
        lines.append("  network e_p along W = W_s + W_a (ensemble): e_p,s "
                     f"{_num(split['symmetric']['epr'], split['symmetric']['stderr'])}, e_p,a "
                     f"{_num(split['antisymmetric']['epr'], split['antisymmetric']['stderr'])}")
    for s in sides:
        rotation = entropy[s].get("grid", {}).get("rotation")
        if rotation:
            lines.append(f"  {s} stationary current circulates {rotation}")

    fixed = report["fixed_points"]
    lines.append("\nfixed points of the latent flow (u = 0)")
    for side in ("target", "network"):
        for p in fixed.get(side, []):
            eigenvalues = p["eigenvalues"]
            lines.append(f"  {side:8s} z = [{', '.join(f'{v:.3f}' for v in p['z'])}]  "
                         f"{p['kind']:14s} λ: {', '.join(_num(v) for v in eigenvalues)}")
    pairing = fixed.get("pairing")
    if pairing:
        for pair in pairing["pairs"]:
            lines.append(f"  paired {pair['reference_kind']:8s} distance {_num(pair['distance'])}"
                         f", largest |Δλ| {_num(pair['max_eigenvalue_diff'])}, kinds agree: "
                         f"{pair['kind_agrees']}")
        for side, key in (("target", "unmatched_reference"), ("network", "unmatched_other")):
            if pairing[key]:
                lines.append(f"  {side} fixed points without a partner: {pairing[key]}")
    if "lyapunov" in report:
        lyapunov = report["lyapunov"]
        lines.append("\nlargest Lyapunov exponent (deterministic latent flow)")
        for k, v in lyapunov.items():
            mean, se = v.get("mean"), v.get("stderr")
            rel = f" ({se / abs(mean):.1%})" if mean and se is not None else ""
            if v.get("reached") is None:
                status = ""
            elif v["reached"]:
                status = f"; target {v['rtol']:.0%} reached"
            else:
                status = (f"; target {v['rtol']:.0%} NOT reached within the budget of "
                          f"{v['budget']:g} (raise --lyapunov-time)")
            lines.append(f"  {k:8s} {_num(mean, se)}{rel} after {v.get('time', 0):g} time units"
                         f"{status}")

    comparison = report.get("comparison")
    if comparison:
        lines.append("\nnetwork vs target")
        lines.append(f"  drift error on the domain      {_num(comparison['e_f_domain'])}")
        lines.append(f"  diffusion error on the domain  {_num(comparison['e_D_domain'])}")
        distances = comparison["distances"]
        lines.append(f"  sliced W1 {_num(distances['sliced_w1'])} (sampling floor "
                     f"{_num(distances.get('sliced_w1_floor'))}); energy distance "
                     f"{_num(distances['energy'])} (floor {_num(distances.get('energy_floor'))})")
        moments = comparison["moments"]
        lines.append("  std per coordinate  target [" + ", ".join(
            f"{v:.3f}" for v in moments["target"]["std"]) + "]  network [" + ", ".join(
            f"{v:.3f}" for v in moments["network"]["std"]) + "]")
        if "wells" in comparison:
            wells = comparison["wells"]
            lines.append(f"  hops between {len(wells['centres'])} wells per unit time: target "
                         f"{_num(wells['target']['hops_per_time'])}, network "
                         f"{_num(wells['network']['hops_per_time'])}")
    parts = report.get("parts")
    if parts:
        lines.append(f"\nparts simulated alone ({parts['trials']} trials × {parts['time']:g})")
        for name in ("symmetric", "antisymmetric"):
            info = parts.get(name, {})
            std = info.get("moments", {}).get("std")
            lines.append(f"  {name:14s} off-manifold drift {_num(info.get('off_manifold_rel'))}"
                         + (", latent std [" + ", ".join(f"{v:.3f}" for v in std) + "]"
                            if std else "") + (f"  ({info['error']})" if "error" in info else ""))
    lines.append(f"\n{report.get('seconds', 0):.1f}s")
    return "\n".join(lines)
