"""Model and trajectory files: round trip, validation of every key, no pickles, no partial files."""
import json
import os

import numpy as np
import pytest

from ddm_numba import DDMError, load_model, sample_network
from ddm_numba.network import FORMAT
from ddm_numba.simulate import Trajectories


def test_model_round_trip(tmp_path, mw_model):
    path = tmp_path / "m.npz"
    mw_model.save(path)
    back = load_model(path)
    for key in ("M", "c", "A", "b", "S0", "R", "B_in"):
        assert np.array_equal(getattr(back, key), getattr(mw_model, key)), key
    assert back.tau == mw_model.tau and back.meta == json.loads(json.dumps(mw_model.meta))
    with np.load(path, allow_pickle=False) as data:
        assert str(data["format"]) == FORMAT
        assert set(data.files) == {"format", "meta", "tau", "M", "c", "A", "b", "S0", "R",
                                   "sigma_private", "B_in"}
    z = np.random.default_rng(0).uniform(-1, 1, (5, 2))
    u = np.ones((5, 2))
    assert np.allclose(back.latent_drift(z, u), mw_model.latent_drift(z, u))


def _rewrite(src, dst, **changes):
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(dst, **arrays)


@pytest.mark.parametrize("change, message", [
    ({"A": np.zeros((3, 5))}, "'A' has shape"),
    ({"R": np.zeros((1, 1, 2))}, "'R' has shape"),
    ({"c": np.zeros(3)}, "'c' has shape"),
    ({"M": None}, "'M' is missing"),
    ({"W": np.zeros((64, 64))}, "exactly one of the keys"),
    ({"tau": np.array(-1.0)}, "'tau' must be > 0"),
    ({"b": np.full(64, np.nan)}, "'b' has non-finite"),
    ({"format": np.array("something/else")}, "not a ddm_numba model"),
    ({"meta": np.array("{not json")}, "not valid JSON"),
    ({"extra": np.zeros(2)}, "unexpected model key 'extra'"),
    ({"A": np.array([["a"] * 64])}, "dtype"),
])
def test_bad_model_files(tmp_path, dw_model, change, message):
    good = tmp_path / "good.npz"
    dw_model.save(good)
    bad = tmp_path / "bad.npz"
    _rewrite(good, bad, **change)
    with pytest.raises(DDMError, match=message):
        load_model(bad)


def test_pickled_arrays_are_refused(tmp_path, dw_model):
    good = tmp_path / "good.npz"
    dw_model.save(good)
    bad = tmp_path / "bad.npz"
    _rewrite(good, bad, meta=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(DDMError, match="not a readable"):
        load_model(bad)


def test_truncated_and_missing_files(tmp_path, dw_model):
    good = tmp_path / "good.npz"
    dw_model.save(good)
    raw = good.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DDMError, match="corrupted or truncated"):
        load_model(cut)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(DDMError, match="not a readable"):
        load_model(junk)
    with pytest.raises(DDMError, match="does not exist"):
        load_model(tmp_path / "nope.npz")


def test_atomic_write_leaves_no_partial_file(tmp_path, dw_model, monkeypatch):
    path = tmp_path / "m.npz"

    def broken_savez(fh, **arrays):
        fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(DDMError, match=r"cannot write '.*m\.npz': disk full"):
        dw_model.save(path)      # the message names the user's file, not the temporary one
    assert os.listdir(tmp_path) == []


def test_written_files_get_normal_permissions(tmp_path, dw_model):
    old = os.umask(0o022)
    try:
        dw_model.save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "m.npz").st_mode & 0o777) == 0o644


def test_trajectory_round_trip(tmp_path, mw_model):
    traj = sample_network(mw_model, trials=2, time=1, seed=0, save_neurons=True,
                          inputs=["0:0.5:1,0"])
    path = tmp_path / "t.npz"
    traj.save(path)
    back = Trajectories.load(path)
    assert np.array_equal(back.z, traj.z) and np.array_equal(back.x, traj.x)
    assert np.array_equal(back.u, traj.u) and back.meta["seed"] == 0
    assert back.u[0].tolist() == [1.0, 0.0] and back.u[-1].tolist() == [0.0, 0.0]
