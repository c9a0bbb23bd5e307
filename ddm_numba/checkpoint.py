"""Fit checkpoints: the best parameters so far, written while a fit runs and when it is
interrupted, so that a long fit can be resumed (``ddm fit ... --resume CKPT.npz``).

A checkpoint is an .npz of plain float arrays and a JSON ``meta`` (read with allow_pickle=False,
like every file of the package): format "ddm_numba.checkpoint/1"; meta holds the system record,
the settings that determine the training samples (N, mode, seed, samples, tau) and the stage:

    "drift"    arrays A, b_z, B_z, M, c: the joint low-rank optimization's best point so far
    "full W"   arrays W, b, B_in, M, c: the full-connectivity stage's best point so far
    "diffusion" the drift done (A, b_z, B_z, M, c, or W, b, B_in, M, c); the diffusion restarts
"""
import json
import time

import numpy as np

from .errors import DDMError
from .network import atomic_savez, read_meta, read_npz

FORMAT = "ddm_numba.checkpoint/1"
EVERY_S = 30.0            # at most one periodic write per this many seconds
STAGES = ("drift", "full W", "diffusion")


class Checkpointer:
    """Writes checkpoints of one fit to ``path``."""

    def __init__(self, path, meta):
        self.path, self.meta = path, dict(meta)
        self.last = time.perf_counter()

    def save(self, stage, arrays, loss, iteration, force=False):
        now = time.perf_counter()
        if self.path is None or not (force or now - self.last >= EVERY_S):
            return
        self.last = now
        meta = dict(self.meta, stage=stage, loss=float(loss), iteration=int(iteration),
                    written=time.strftime("%Y-%m-%dT%H:%M:%S"))
        out = {k: np.asarray(v, dtype=float) for k, v in arrays.items()}
        out["format"] = np.array(FORMAT)
        out["meta"] = np.array(json.dumps(meta, sort_keys=True))
        atomic_savez(self.path, out)


def load_checkpoint(path):
    """(meta, arrays) of a checkpoint file, validated (never unpickles)."""
    arrays = read_npz(path, "checkpoint")
    fmt = arrays.pop("format", np.array(""))
    if fmt.dtype.kind != "U" or str(fmt) != FORMAT:
        raise DDMError(f"{path}: not a ddm_numba fit checkpoint (format {str(fmt)!r}, expected "
                       f"{FORMAT!r})")
    meta = read_meta(arrays.pop("meta", None), path, "checkpoint")
    if meta.get("stage") not in STAGES:
        raise DDMError(f"{path}: checkpoint stage {meta.get('stage')!r} is not one of {STAGES}")
    allowed = {"A", "b_z", "B_z", "M", "c", "W", "b", "B_in"}
    for key, value in arrays.items():
        if key not in allowed:
            raise DDMError(f"{path}: unexpected checkpoint key {key!r}")
        if value.dtype.kind != "f" or not np.all(np.isfinite(value)):
            raise DDMError(f"{path}: checkpoint key {key!r} must hold finite floats")
    return meta, arrays


def check_resume(meta, arrays, path, system, N, mode, seed, samples, tau):
    """Refuse a checkpoint that belongs to another fit (the training samples would differ)."""
    want = {"system": system.name, "neurons": N, "mode": mode, "seed": seed, "samples": samples,
            "tau": tau}
    for key, value in want.items():
        got = meta.get(key)
        if got != value:
            raise DDMError(f"{path}: the checkpoint is of a fit with {key} = {got!r}, this fit "
                           f"has {key} = {value!r}; resume with the same settings")
    d = system.d
    shapes = {"M": (N, d), "c": (N,)}
    if meta["stage"] == "drift" or (meta["stage"] == "diffusion" and "A" in arrays):
        shapes.update({"A": (d, N), "b_z": (d,), "B_z": (d, system.p)})
    else:
        shapes.update({"W": (N, N), "b": (N,), "B_in": (N, system.p)})
    for key, shape in shapes.items():
        if key not in arrays or arrays[key].shape != shape:
            got = None if key not in arrays else arrays[key].shape
            raise DDMError(f"{path}: checkpoint key {key!r} has shape {got}, expected {shape}")
    if np.linalg.matrix_rank(arrays["M"]) < d:
        raise DDMError(f"{path}: checkpoint key 'M' does not have full column rank {d}")
