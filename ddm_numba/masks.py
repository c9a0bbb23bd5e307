"""Connectivity masks for full-mode fits (docs/model.md §3b): which W_ij may be non-zero.

A mask is a boolean N×N array, mask[i, j] = True when neuron j may connect to neuron i. It comes
from a file or from a named generator with a seed:

    FILE.npz                   a boolean array under the key ``mask`` (read without pickle)
    random:p=0.1               each connection allowed independently with probability p
    distance:p=0.1             neurons at random places on the unit torus; j → i allowed when
                               they are closer than r, πr² = p (so the density is about p): a
                               local wiring diagram

The fit keeps every masked weight at exactly zero (a bound lo = hi = 0 for the optimizer, and the
gradient restricted to the allowed entries), so the model file's W is zero outside the mask.
"""
import hashlib

import numpy as np

from .errors import DDMError

GENERATORS = ("random", "distance")


def _density_param(spec, text):
    key, sep, value = text.partition("=")
    if key.strip() != "p" or not sep:
        raise DDMError(f"mask {spec!r}: write {spec.split(':')[0]}:p=DENSITY, e.g. random:p=0.1")
    try:
        p = float(value)
    except ValueError:
        raise DDMError(f"mask {spec!r}: {value!r} is not a number") from None
    if not 0 < p <= 1:
        raise DDMError(f"mask {spec!r}: the density p must be in (0, 1], got {p:g}")
    return p


def make_mask(spec, N, seed=0):
    """(mask (N, N) bool, description dict for the model's meta) from an array, a file name or a
    generator spec (see the module's docstring)."""
    if isinstance(spec, np.ndarray):
        mask, source = spec, "array"
    elif isinstance(spec, str) and spec.split(":", 1)[0] in GENERATORS and ":" in spec:
        kind, rest = spec.split(":", 1)
        p = _density_param(spec, rest)
        rng = np.random.default_rng([int(seed), 0x3A5C])
        if kind == "random":
            mask = rng.random((N, N)) < p
        else:
            pos = rng.random((N, 2))
            gap = np.abs(pos[:, None, :] - pos[None, :, :])
            gap = np.minimum(gap, 1.0 - gap)                       # the torus: no edges
            mask = np.sum(gap ** 2, axis=-1) < p / np.pi
        source = spec
    elif isinstance(spec, str):
        from .network import read_npz
        arrays = read_npz(spec, "mask")
        if "mask" not in arrays:
            raise DDMError(f"{spec}: a mask file holds a boolean N×N array under the key 'mask'")
        mask, source = arrays["mask"], spec
    else:
        raise DDMError(f"a mask is a boolean N×N array, a .npz file or a generator such as "
                       f"random:p=0.1 or distance:p=0.1; got {type(spec).__name__}")
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise DDMError(f"the mask must be boolean (True: the connection may exist), got dtype "
                       f"{mask.dtype}")
    if mask.shape != (N, N):
        raise DDMError(f"the mask must be {N}×{N} for {N} neurons, got shape {mask.shape}")
    if not mask.any():
        raise DDMError("the mask allows no connection at all")
    info = {"source": source, "density": float(mask.mean()), "allowed": int(mask.sum()),
            "sha256": hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()}
    return mask, info
