"""Target SDEs  dz = f(z, u) dt + g(z) dB  (docs/model.md §1), the built-ins, and loading a
user's own.

A system is a subclass of :class:`System` that sets its dimensions, sampling domain, suggested step
and default parameters as class attributes and implements two vectorized callables:

    drift(z, u)   z (K, d), u (K, p) or None  ->  f, (K, d)
    diffusion(z)  z (K, d)                    ->  g, (K, d, m);   D = g gᵀ (no factor 1/2)

Parameters live in ``params`` and read as attributes (``self.sigma``).
"""
import importlib
import importlib.util
import math
import os
import sys
import traceback

import numpy as np

from .errors import DDMError, positive


class System:
    """Base class of target SDEs. Override the class attributes and ``drift``/``diffusion``."""

    name = "system"
    d = 1                      # latent dimension
    m = 1                      # noise dimension (columns of g)
    p = 0                      # input dimension
    domain = [[-1.0, 1.0]]     # (d, 2) sampling box: training points and held-out points
    dt = 0.01                  # suggested Euler–Maruyama step
    duration = 100.0           # suggested simulation time
    params = {}                # named parameters and their defaults
    constant_diffusion = False  # True: D does not depend on z (closed-form diffusion fit)
    description = ""

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            known = ", ".join(self.params) or "none"
            raise DDMError(f"system {self.name!r} has no parameter {unknown[0]!r} "
                           f"(its parameters: {known})")
        values = dict(self.params)
        for key, value in params.items():
            if isinstance(value, (bool, np.bool_)):
                raise DDMError(f"parameter {key}={value!r} of system {self.name!r} is not a "
                               "number")
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                raise DDMError(f"parameter {key}={value!r} of system {self.name!r} "
                               "is not a number") from None
            if not math.isfinite(values[key]):
                raise DDMError(f"parameter {key}={value!r} of system {self.name!r} is not finite")
        self.params = {k: float(v) for k, v in values.items()}
        for key in ("d", "m", "p"):
            value = getattr(self, key)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < \
                    (0 if key == "p" else 1):
                raise DDMError(f"system {self.name!r}: {key} must be a positive integer"
                               f"{' (or 0)' if key == 'p' else ''}, got {value!r}")
        try:
            domain = np.asarray(self.domain, dtype=float)
        except (TypeError, ValueError):
            raise DDMError(f"system {self.name!r}: domain must be numbers, [[lo, hi]] per "
                           "dimension") from None
        if domain.shape != (self.d, 2):
            raise DDMError(f"system {self.name!r}: domain has shape {domain.shape}, expected "
                           f"({self.d}, 2): one [lo, hi] per latent dimension")
        if not (np.all(np.isfinite(domain)) and np.all(domain[:, 0] < domain[:, 1])):
            raise DDMError(f"system {self.name!r}: domain must be finite with lo < hi in each "
                           f"dimension, got {domain.tolist()}")
        self.domain = domain
        for key in ("dt", "duration"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise DDMError(f"system {self.name!r}: {key} must be a positive number, "
                               f"got {value!r}")
        self.check_params()

    def __getattr__(self, key):
        params = self.__dict__.get("params", {})
        if key in params:
            return params[key]
        raise AttributeError(key)

    def check_params(self):
        """Raise DDMError for parameter values that make no sense (override where needed)."""

    def drift(self, z, u=None):
        raise NotImplementedError

    def diffusion(self, z):
        raise NotImplementedError

    def linear_matrix(self):
        """B when the drift is exactly f(z) = −B z (u = 0), else None.

        Linear systems get closed-form analysis (Lyapunov covariance, current, entropy
        production); a user system declares itself linear by overriding this.
        """
        return None

    def record(self):
        """The system as model and trajectory files record it (``meta.system``): data only.

        The one writer of that record; :func:`system_from_record` is the one reader. A built-in
        is named by ``name``; a user's own system also keeps ``spec``, how it was named when
        fitted, which a reader shows the user but never loads by itself.
        """
        rec = {"name": self.name, "builtin": self.is_builtin(), "params": dict(self.params),
               "d": self.d, "m": self.m, "p": self.p, "domain": self.domain.tolist(),
               "dt": float(self.dt), "duration": float(self.duration)}
        if not rec["builtin"]:
            rec["spec"] = getattr(self, "spec", None)
        return rec

    def is_builtin(self):
        return BUILTIN.get(self.name) is type(self)

    def info(self):
        """A JSON-able description: what ``ddm systems --json`` prints."""
        return {"name": self.name, "d": self.d, "m": self.m, "p": self.p,
                "params": dict(self.params), "domain": self.domain.tolist(), "dt": self.dt,
                "duration": self.duration, "constant_diffusion": bool(self.constant_diffusion),
                "description": self.description}


def _isotropic(z, d, sigma):
    g = np.zeros((z.shape[0], d, d))
    for a in range(d):
        g[:, a, a] = sigma
    return g


def _nonnegative(system, *names):
    """Parameters ``names`` of ``system`` must be ≥ 0 (System.__init__ made them finite)."""
    for name in names:
        positive(system.params[name], f"parameter {name} of system {system.name!r}",
                 allow_zero=True)


class DoubleWell(System):
    name, d, m = "double_well", 1, 1
    domain, dt, duration = [[-2.0, 2.0]], 0.01, 200.0
    params = {"sigma": 0.7}
    constant_diffusion = True
    description = "f = z - z^3 (V = z^4/4 - z^2/2), g = sigma; stationary p ∝ exp(-2V/sigma^2)"

    def check_params(self):
        _nonnegative(self, "sigma")

    def drift(self, z, u=None):
        return z - z ** 3

    def diffusion(self, z):
        return _isotropic(z, 1, self.sigma)


class OU2D(System):
    name, d, m = "ou2d", 2, 2
    domain, dt, duration = [[-3.0, 3.0], [-3.0, 3.0]], 0.01, 100.0
    params = {"omega": 2.0, "sigma": 1.0}
    constant_diffusion = True
    description = "f = -B z, B = [[1, -omega], [omega, 1]], g = sigma I: a nonequilibrium OU process"

    def check_params(self):
        _nonnegative(self, "sigma")

    def matrix_B(self):
        return np.array([[1.0, -self.omega], [self.omega, 1.0]])

    def linear_matrix(self):
        return self.matrix_B()

    def drift(self, z, u=None):
        return -z @ self.matrix_B().T

    def diffusion(self, z):
        return _isotropic(z, 2, self.sigma)


class LimitCycle(System):
    name, d, m = "limit_cycle", 2, 2
    domain, dt, duration = [[-2.0, 2.0], [-2.0, 2.0]], 0.01, 100.0
    params = {"mu": 1.0, "omega": 1.0, "sigma": 0.3}
    constant_diffusion = True
    description = "Stuart–Landau: f = (mu - |z|^2) z + omega J z, g = sigma I"

    def check_params(self):
        _nonnegative(self, "sigma")

    def drift(self, z, u=None):
        r2 = np.sum(z ** 2, axis=1, keepdims=True)
        rot = np.stack([-z[:, 1], z[:, 0]], axis=1)
        return (self.mu - r2) * z + self.omega * rot

    def diffusion(self, z):
        return _isotropic(z, 2, self.sigma)


class Lorenz(System):
    name, d, m = "lorenz", 3, 3
    domain, dt, duration = [[-25.0, 25.0], [-30.0, 30.0], [-5.0, 55.0]], 0.002, 50.0
    params = {"sigma_L": 10.0, "rho": 28.0, "beta": 8.0 / 3.0, "sigma": 2.0}
    constant_diffusion = True
    description = "stochastic Lorenz attractor, original coordinates, additive noise g = sigma I"

    def check_params(self):
        _nonnegative(self, "sigma")

    def drift(self, z, u=None):
        x, y, w = z[:, 0], z[:, 1], z[:, 2]
        return np.stack([self.sigma_L * (y - x), x * (self.rho - w) - y,
                         x * y - self.beta * w], axis=1)

    def diffusion(self, z):
        return _isotropic(z, 3, self.sigma)


class MultiWell(System):
    name, d, m, p = "multiwell", 2, 2, 2
    domain, dt, duration = [[-2.0, 2.0], [-2.0, 2.0]], 0.01, 200.0
    params = {"sigma": 0.35}
    constant_diffusion = True
    description = ("associative memory: f = (z1 - z1^3, z2 - z2^3) + u, g = sigma I; "
                   "memories at (±1, ±1), inputs u switch between them")
    input_domain = [[-1.0, 1.0], [-1.0, 1.0]]  # where training draws inputs u

    def check_params(self):
        _nonnegative(self, "sigma")

    def drift(self, z, u=None):
        f = z - z ** 3
        return f if u is None else f + u

    def diffusion(self, z):
        return _isotropic(z, 2, self.sigma)


class RingWells(System):
    name, d, m = "ring_wells", 2, 2
    domain, dt, duration = [[-2.0, 2.0], [-2.0, 2.0]], 0.01, 200.0
    params = {"alpha": 1.0, "beta": 0.3, "K": 3.0, "kappa": 0.5, "sigma": 0.4}
    constant_diffusion = True
    description = ("sequential memory: f = -grad V + kappa J z, V = alpha(|z|^2-1)^2 "
                   "- beta Re((z1 + i z2)^K), g = sigma I")

    def check_params(self):
        _nonnegative(self, "sigma")
        if self.K != round(self.K) or self.K < 1:
            raise DDMError(f"parameter K of system 'ring_wells' must be a positive integer, "
                           f"got {self.K}")

    def drift(self, z, u=None):
        w = z[:, 0] + 1j * z[:, 1]
        r2 = np.abs(w) ** 2
        k = int(round(self.K))
        # grad Re(w^K) = K * (Re w^(K-1), -Im w^(K-1))  (Cauchy–Riemann)
        wk = w ** (k - 1)
        grad_re = k * np.stack([wk.real, -wk.imag], axis=1)
        grad_v = 4 * self.alpha * (r2 - 1)[:, None] * z - self.beta * grad_re
        rot = np.stack([-z[:, 1], z[:, 0]], axis=1)
        return -grad_v + self.kappa * rot

    def diffusion(self, z):
        return _isotropic(z, 2, self.sigma)


class Multiplicative(System):
    name, d, m = "multiplicative", 1, 1
    domain, dt, duration = [[-3.0, 3.0]], 0.005, 200.0
    params = {"a": 0.2, "b": 0.5}
    description = "f = -z, g = sqrt(a + b z^2); stationary p ∝ (a + b z^2)^(-1 - 1/b)"

    def check_params(self):
        if self.a <= 0 or self.b <= 0:
            raise DDMError("parameters a and b of system 'multiplicative' must be > 0")

    def drift(self, z, u=None):
        return -z

    def diffusion(self, z):
        return np.sqrt(self.a + self.b * z ** 2)[:, :, None]


BUILTIN = {cls.name: cls for cls in
           (DoubleWell, OU2D, LimitCycle, Lorenz, MultiWell, RingWells, Multiplicative)}


def _load_user_class(spec):
    """'path/to/file.py:NAME' or 'package.module:NAME' -> the object NAME."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise DDMError(f"unknown system {spec!r}: use a built-in ({', '.join(BUILTIN)}), "
                       "'path/to/file.py:NAME' or 'package.module:NAME'")
    if target.endswith(".py") or os.sep in target:
        if not os.path.isfile(target):
            raise DDMError(f"system file {target!r} does not exist")
        mod_name = "ddm_user_system_" + str(abs(hash(os.path.abspath(target))))
        module_spec = importlib.util.spec_from_file_location(mod_name, target)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise DDMError(f"could not load system file {target!r}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise DDMError(f"could not import module {target!r} for system {spec!r}: {exc}") \
                from exc
    if not hasattr(module, attr):
        raise DDMError(f"{target!r} has no attribute {attr!r}")
    return getattr(module, attr)


def get_system(spec, **params):
    """A system from a built-in name or a user spec, with parameters overridden by ``params``.

    A spec naming a file or module imports it: that is the caller's explicit act, never
    something a data file can ask for (see :func:`system_from_record`).
    """
    if isinstance(spec, System):
        if params:
            system = type(spec)(**{**spec.params, **params})
            if hasattr(spec, "spec"):
                system.spec = spec.spec
            return system
        return spec
    if isinstance(spec, type) and issubclass(spec, System):
        return user_call(f"system class {spec.__name__}", spec, **params)
    if not isinstance(spec, str):
        raise DDMError(f"a system is a built-in name ({', '.join(BUILTIN)}), 'file.py:NAME', "
                       f"'package.module:NAME' or a ddm_numba.System; got "
                       f"{type(spec).__name__}")
    if spec in BUILTIN:
        return BUILTIN[spec](**params)
    factory = _load_user_class(spec)
    if not callable(factory):
        raise DDMError(f"{spec!r} names a {type(factory).__name__}, not a System subclass or a "
                       "function that returns a System")
    system = user_call(f"system {spec!r}", factory, **params)
    if not isinstance(system, System):
        raise DDMError(f"{spec!r} did not produce a ddm_numba.System (got {type(system).__name__})")
    system.spec = spec
    return system


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def user_call(what, fn, *args, **kwargs):
    """fn(*args, **kwargs) for code the user wrote (a system's factory, drift, diffusion).

    An exception becomes a DDMError that names it and shows the user's own traceback lines
    (frames outside ddm_numba and numpy), not ours.
    """
    try:
        return fn(*args, **kwargs)
    except DDMError:
        raise
    except Exception as exc:
        frames = [fr for fr in traceback.extract_tb(exc.__traceback__)
                  if not fr.filename.startswith(_PACKAGE_DIR)
                  and f"{os.sep}numpy{os.sep}" not in fr.filename]
        lines = "".join(traceback.format_list(frames[-5:])).rstrip()
        raise DDMError(f"your {what} raised {type(exc).__name__}: {exc}"
                       + (f"\n{lines}" if lines else "")) from None


def system_from_record(record, given=None, what="this model"):
    """The system a file's ``meta.system`` record names — never by running code from the file.

    A built-in name resolves (with the recorded parameters, checked as numbers). A user's own
    system is loaded only from ``given``, the caller's explicit choice (``--system``); the record
    then only checks that it fits (same name and dimensions) and supplies the parameters.
    Returns None when the record says the model came from data with no known system.
    """
    if not isinstance(record, dict):
        raise DDMError(f"{what}: metadata key 'system' must be a JSON object, got "
                       f"{type(record).__name__}")
    name = record.get("name")
    if record.get("kind") == "data" and given is None:
        return None
    if not isinstance(name, str) or not name:
        raise DDMError(f"{what}: metadata 'system' has no valid 'name'")
    params = record.get("params", {})
    if not isinstance(params, dict):
        raise DDMError(f"{what}: metadata 'system.params' must be a JSON object")
    if given is not None:
        system = get_system(given)
        if record.get("kind") != "data":
            if system.name != name:
                raise DDMError(f"{what} was fitted to system {name!r}, but --system gives "
                               f"{system.name!r}")
            for key in ("d", "m", "p"):
                if key in record and record[key] != getattr(system, key):
                    raise DDMError(f"{what} was fitted to a system with {key} = {record[key]}, "
                                   f"the given system has {key} = {getattr(system, key)}")
            own = {k: v for k, v in params.items() if k in system.params}
            if own:
                system = get_system(system, **own)
        return system
    # a built-in: by name (older files wrote spec == name and no 'builtin' key)
    builtin = record.get("builtin", record.get("spec", name) == name)
    if builtin and name in BUILTIN:
        return BUILTIN[name](**params)
    spec = record.get("spec")
    said = (f" (the file says it was named {spec!r}: check that before you pass it)"
            if isinstance(spec, str) and spec else "")
    raise DDMError(f"{what} was fitted to your own system {name!r}{said}. Files never load "
                   "code by themselves: name the system explicitly with --system "
                   "path/to/file.py:NAME or --system package.module:NAME (in Python: "
                   "system=...)")


def list_systems():
    return [cls().info() for cls in BUILTIN.values()]


def parse_params(items):
    """['sigma=0.5', 'omega=2'] -> {'sigma': 0.5, 'omega': 2.0}, with errors that name the item."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DDMError(f"malformed parameter {item!r}: write NAME=VALUE, e.g. sigma=0.5")
        try:
            out[key] = float(value)
        except ValueError:
            raise DDMError(f"malformed parameter {item!r}: {value!r} is not a number") from None
    return out


def evaluate(system, z, u=None):
    """Drift (K, d) and g (K, d, m) of the target at z, checked for shape and finiteness."""
    z = np.ascontiguousarray(z, dtype=float)
    K = z.shape[0]
    f = _as_float(user_call(f"system {system.name!r}'s drift", system.drift, z, u), system,
                  "drift")
    if f.shape != (K, system.d):
        raise DDMError(f"drift of system {system.name!r} returned shape {f.shape}, "
                       f"expected {(K, system.d)}")
    g = _as_float(user_call(f"system {system.name!r}'s diffusion", system.diffusion, z),
                  system, "diffusion")
    if g.shape != (K, system.d, system.m):
        raise DDMError(f"diffusion of system {system.name!r} returned shape {g.shape}, "
                       f"expected {(K, system.d, system.m)}")
    for what, arr in (("drift", f), ("diffusion", g)):
        bad = ~np.isfinite(arr.reshape(K, -1)).all(axis=1)
        if bad.any():
            k = int(np.argmax(bad))
            raise DDMError(f"{what} of system {system.name!r} is not finite at z = "
                           f"{np.array2string(z[k], precision=4)} ({int(bad.sum())} of {K} "
                           "points); fix the system or shrink its domain")
        big = np.abs(arr.reshape(K, -1)).max(axis=1) > MAX_MAGNITUDE
        if big.any():
            k = int(np.argmax(big))
            raise DDMError(f"{what} of system {system.name!r} reaches "
                           f"{np.abs(arr[k]).max():.3g} at z = "
                           f"{np.array2string(z[k], precision=4)}: values beyond "
                           f"{MAX_MAGNITUDE:g} overflow the fit's squares; check the parameters "
                           "or rescale the system")
    return f, g


# |f| or |g| beyond this overflows float64 in the losses' squares and sums (1e308 / K)
MAX_MAGNITUDE = 1e100


def _as_float(value, system, what):
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise DDMError(f"{what} of system {system.name!r} returned {arr.dtype} values; "
                       "it must return real numbers")
    return arr.astype(float)
