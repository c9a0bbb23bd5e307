"""The network (docs/model.md §1–3, docs/formats.md §1): its parameters, the matrices derived
from them, its file.

    dx = (1/τ) [ −x + W φ(x) + b + B_in u ] dt + Σ(x) dW,     Σ(x) = [ M S(x), σ_p I_N ]

Low-rank models store the decoders A (W = M A); full models store W. Either way the latent
state is z = P (x − c) with P = (MᵀM)⁻¹Mᵀ.
"""
import json
import os
import tempfile

import numpy as np

from .blocks import row_blocks
from .errors import DDMError

FORMAT = "ddm_numba.model/1"


class Network:
    """A rate network with a d-dimensional latent manifold {M z + c}.

    Exactly one of ``A`` (low-rank, W = M A) or ``W`` (full) is given.
    """

    def __init__(self, tau, M, c, b, S0, R, sigma_private=0.0, A=None, W=None, B_in=None,
                 meta=None):
        if (A is None) == (W is None):
            raise DDMError("a network needs exactly one of A (low-rank) or W (full)")
        self.tau = float(tau)
        self.M = np.ascontiguousarray(M, dtype=float)
        self.c = np.ascontiguousarray(c, dtype=float)
        self.b = np.ascontiguousarray(b, dtype=float)
        self.S0 = np.ascontiguousarray(S0, dtype=float)
        self.R = np.ascontiguousarray(R, dtype=float)
        self.sigma_private = float(sigma_private)
        self.A = None if A is None else np.ascontiguousarray(A, dtype=float)
        self._W = None if W is None else np.ascontiguousarray(W, dtype=float)
        self.B_in = None if B_in is None else np.ascontiguousarray(B_in, dtype=float)
        self.meta = dict(meta or {})
        _validate(self._arrays(), "network")
        # Q = I − M P is not stored: it is N×N (512 MB at N = 8192); project_off applies it
        self.P = np.linalg.solve(self.M.T @ self.M, self.M.T)

    def with_noise(self, S0, R):
        """This network with the noise S(h) = S0 + R φ(h) instead: a new Network with the same
        drift, embedding and σ_p, and a copy of meta. This one is left as it is.

        The fits find the diffusion after the drift, from the drift network's embedding; they
        build the final network with this rather than set S0 and R on one already built.
        """
        return Network(meta=self.meta, **dict(self._arrays(), S0=S0, R=R))

    # -- sizes and derived quantities ------------------------------------------------------
    N = property(lambda self: self.M.shape[0])
    d = property(lambda self: self.M.shape[1])
    m = property(lambda self: self.S0.shape[1])
    p = property(lambda self: 0 if self.B_in is None else self.B_in.shape[1])
    mode = property(lambda self: "lowrank" if self.A is not None else "full")

    @property
    def W(self):
        """Connectivity N×N (for low-rank models, the rank-d product M A)."""
        return self.M @ self.A if self._W is None else self._W

    @property
    def b_z(self):
        """Latent bias b_z = P (b − c) (for low-rank models b = M b_z + c)."""
        return self.P @ (self.b - self.c)

    @property
    def B_z(self):
        """Latent input gain P B_in (d×p)."""
        return np.zeros((self.d, 0)) if self.B_in is None else self.P @ self.B_in

    def embed(self, z):
        """x = M z + c for latent points z (K, d)."""
        return np.asarray(z, dtype=float) @ self.M.T + self.c

    def readout(self, x):
        """z = P (x − c) for states x (..., N)."""
        return (np.asarray(x, dtype=float) - self.c) @ self.P.T

    def project_off(self, X):
        """Q X for states or drifts X (..., N), Q = I − M P, without forming the N×N Q.

        Rows are vectors: the result is X − (X Pᵀ) Mᵀ, O(N d) a row. M P is the orthogonal
        projector onto the columns of M, so Q is symmetric and this equals X Q as well.
        """
        X = np.asarray(X, dtype=float)
        return X - (X @ self.P.T) @ self.M.T

    def full_drift(self, x, u=None):
        """F(x) = (1/τ)[−x + W φ(x) + b + B_in u]  (..., N)."""
        F = -x + np.tanh(x) @ self.W.T + self.b
        if self.B_in is not None and u is not None:
            F = F + np.asarray(u, dtype=float) @ self.B_in.T
        return F / self.tau

    def latent_drift(self, z, u=None):
        """f_net(z, u) = P F(M z + c)  (K, d): the drift on the manifold.

        With x = M z + c, P x = z + P c and P (b − c) = b_z, so
            P F(x) = (1/τ)[−z + (P W) φ(M z + c) + b_z + B_z u],
        where P W = A for low-rank models: O(K N d), never the N×N W, in row blocks (blocks.py).
        u: (p,) for all rows, or one row per state.
        """
        z = np.asarray(z, dtype=float)
        PW = self.A if self.A is not None else self.P @ self._W
        const = self.b_z
        U = None
        if self.B_in is not None and u is not None:
            u = np.asarray(u, dtype=float)
            if u.ndim == 1:
                const = const + self.B_z @ u
            else:
                U = u.reshape(-1, u.shape[-1])
        flat = z.reshape(-1, self.d)
        out = np.empty_like(flat)
        for sl in row_blocks(len(flat), self.N):
            zs = flat[sl]
            out[sl] = np.tanh(zs @ self.M.T + self.c) @ PW.T + const - zs
            if U is not None:
                out[sl] += U[sl] @ self.B_z.T
        return (out / self.tau).reshape(z.shape)

    def off_manifold_drift(self, z, u=None):
        """F_⊥ = Q F(M z + c) (K, N): zero for low-rank models."""
        return self.project_off(self.full_drift(self.embed(z), u))

    def noise_S(self, z):
        """S(h)_{ab} = S0_{ab} + Σ_j R_{abj} φ_j(h), h = M z + c  → (K, d, m), in row blocks."""
        z = np.asarray(z, dtype=float)
        flat = z.reshape(-1, self.d)
        d, m = self.S0.shape
        R = self.R.reshape(d * m, self.N)
        out = np.empty((len(flat), d * m))
        for sl in row_blocks(len(flat), self.N):
            out[sl] = np.tanh(flat[sl] @ self.M.T + self.c) @ R.T + self.S0.reshape(-1)
        return out.reshape(z.shape[:-1] + (d, m))

    def latent_diffusion(self, z):
        """D_net(z) = S Sᵀ + σ_p² P Pᵀ  (K, d, d)."""
        S = self.noise_S(z)
        return np.einsum("...am,...bm->...ab", S, S) + self.sigma_private ** 2 * (self.P @ self.P.T)

    # -- file ---------------------------------------------------------------------------------
    def _arrays(self):
        arrays = {"tau": np.array(self.tau), "M": self.M, "c": self.c, "b": self.b,
                  "S0": self.S0, "R": self.R, "sigma_private": np.array(self.sigma_private)}
        if self.A is not None:
            arrays["A"] = self.A
        if self._W is not None:
            arrays["W"] = self._W
        if self.B_in is not None:
            arrays["B_in"] = self.B_in
        return arrays

    def save(self, path):
        """Write the model `.npz` of docs/formats.md §1 atomically (temp file + rename)."""
        arrays = self._arrays()
        arrays["format"] = np.array(FORMAT)
        arrays["meta"] = np.array(json.dumps(self.meta, sort_keys=True))
        atomic_savez(path, arrays)

    @classmethod
    def load(cls, path):
        return load_model(path)

    def __repr__(self):
        return (f"Network(mode={self.mode!r}, N={self.N}, d={self.d}, m={self.m}, p={self.p}, "
                f"tau={self.tau}, system={self.meta.get('system', {}).get('name')!r})")


def atomic_write(path, write):
    """Call write(binary file) on a temporary file in path's folder, then rename it onto path.

    A failure leaves no partial file. The result gets the usual permissions (0666 less the
    umask), not mkstemp's private 0600.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DDMError(f"cannot write {path!r}: folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise DDMError(f"cannot write {path!r}: it is a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    except OSError as exc:
        raise DDMError(f"cannot write {path!r}: {exc.strerror} (folder {folder!r})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise DDMError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_savez(path, arrays):
    """np.savez, atomically (see atomic_write)."""
    if not os.fspath(path).endswith(".npz"):
        raise DDMError(f"output file {os.fspath(path)!r} must end in .npz")
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def read_npz(path, what):
    """Every array of an .npz, read with allow_pickle=False; errors name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DDMError(f"{what} file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError (object arrays), EOFError, ...
        reason = str(exc)
        if len(reason) > 160:     # zipfile quotes raw header bytes: keep the message a line
            reason = reason[:160] + " …"
        raise DDMError(f"{what} file {path!r} is not a readable .npz "
                       f"(corrupted or truncated?): {type(exc).__name__}: {reason}") from None


def _shape_error(key, got, want):
    return DDMError(f"model key {key!r} has shape {got}, expected {want}")


def _validate(arrays, source):
    """Check every key's presence, shape, dtype and finiteness; messages name the key."""
    for key in ("tau", "M", "c", "b", "S0", "R", "sigma_private"):
        if key not in arrays:
            raise DDMError(f"{source}: model key {key!r} is missing")
    if ("A" in arrays) == ("W" in arrays):
        raise DDMError(f"{source}: a model has exactly one of the keys 'A' (low-rank) or "
                       "'W' (full)")
    for key, value in arrays.items():
        if key in ("format", "meta"):
            continue
        value = np.asarray(value)
        if value.dtype.kind not in "fiu":
            raise DDMError(f"{source}: model key {key!r} has dtype {value.dtype}, expected float")
        if not np.all(np.isfinite(value)):
            raise DDMError(f"{source}: model key {key!r} has non-finite values")
    M = np.asarray(arrays["M"])
    if M.ndim != 2 or M.shape[0] < M.shape[1] or M.shape[1] < 1:
        raise DDMError(f"{source}: model key 'M' has shape {M.shape}, expected (N, d) with N >= d")
    N, d = M.shape
    S0 = np.asarray(arrays["S0"])
    if S0.ndim != 2 or S0.shape[0] != d:
        raise DDMError(f"{source}: " + str(_shape_error("S0", S0.shape, f"({d}, m)")))
    m = S0.shape[1]
    want = {"tau": (), "sigma_private": (), "c": (N,), "b": (N,), "R": (d, m, N)}
    if "A" in arrays:
        want["A"] = (d, N)
    else:
        want["W"] = (N, N)
    if "B_in" in arrays:
        B_in = np.asarray(arrays["B_in"])
        if B_in.ndim != 2 or B_in.shape[0] != N:
            raise DDMError(f"{source}: " + str(_shape_error("B_in", B_in.shape, f"({N}, p)")))
    for key, shape in want.items():
        got = np.shape(arrays[key])
        if got != shape:
            raise DDMError(f"{source}: " + str(_shape_error(key, got, shape)))
    if float(arrays["tau"]) <= 0:
        raise DDMError(f"{source}: model key 'tau' must be > 0, got {float(arrays['tau'])}")
    if float(arrays["sigma_private"]) < 0:
        raise DDMError(f"{source}: model key 'sigma_private' must be >= 0")
    if np.linalg.matrix_rank(M) < d:
        raise DDMError(f"{source}: model key 'M' does not have full column rank {d}")


def load_model(path):
    """Read and validate a model `.npz` (never unpickles)."""
    arrays = read_npz(path, "model")
    fmt = str(arrays.pop("format", ""))
    if fmt != FORMAT:
        raise DDMError(f"{path}: not a ddm_numba model (format {fmt!r}, expected {FORMAT!r})")
    meta = read_meta(arrays.pop("meta", None), path, "model")
    allowed = {"tau", "M", "c", "A", "W", "b", "S0", "R", "sigma_private", "B_in"}
    extra = sorted(set(arrays) - allowed)
    if extra:
        raise DDMError(f"{path}: unexpected model key {extra[0]!r}")
    _validate(arrays, path)
    check_system_meta(meta, path, int(np.shape(arrays["M"])[1]))
    return Network(meta=meta, **{k: v for k, v in arrays.items()})


def read_meta(value, path, what):
    """A file's ``meta`` key: a JSON object in a 0-d string array (absent: {})."""
    if value is None:
        return {}
    if value.dtype.kind != "U" or value.ndim != 0:
        raise DDMError(f"{path}: {what} key 'meta' must be a JSON string, got a {value.dtype} "
                       f"array of shape {value.shape}")
    try:
        meta = json.loads(str(value))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DDMError(f"{path}: {what} key 'meta' is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise DDMError(f"{path}: {what} key 'meta' must be a JSON object, got "
                       f"{type(meta).__name__}")
    return meta


def check_system_meta(meta, path, d):
    """The fields of ``meta.system`` that sampling reads as numbers (domain, dt, duration)."""
    if "system" not in meta:
        return
    sysmeta = meta["system"]
    if not isinstance(sysmeta, dict):
        raise DDMError(f"{path}: metadata key 'system' must be a JSON object, got "
                       f"{type(sysmeta).__name__}")
    if "domain" in sysmeta:
        try:
            dom = np.asarray(sysmeta["domain"], dtype=float)
        except (TypeError, ValueError):
            dom = None
        if dom is None or dom.shape != (d, 2) or not np.all(np.isfinite(dom)) \
                or not np.all(dom[:, 0] < dom[:, 1]):
            raise DDMError(f"{path}: metadata 'system.domain' must be {d} finite [lo, hi] pairs")
    for key in ("dt", "duration"):
        value = sysmeta.get(key)
        if value is not None and not (isinstance(value, (int, float)) and not
                                      isinstance(value, bool) and 0 < value < float("inf")):
            raise DDMError(f"{path}: metadata 'system.{key}' must be a positive number, "
                           f"got {value!r}")
    for key in ("d", "m", "p"):
        value = sysmeta.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)):
            raise DDMError(f"{path}: metadata 'system.{key}' must be an integer, got {value!r}")
    if sysmeta.get("d", d) != d:
        raise DDMError(f"{path}: metadata says d = {sysmeta['d']}, the arrays have d = {d}")
