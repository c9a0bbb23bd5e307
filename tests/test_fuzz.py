"""Fuzzing the promise "files never run code, commands never destroy data, every bad input gets
a clear error" with hypothesis.

What is fuzzed:

1. model files, mutated from one tiny valid model (keys dropped, added, reshaped, retyped,
   made non-finite; garbage, truncated and bit-flipped bytes; broken ``meta`` JSON;
   ``meta.system`` records of every wrong kind, among them records that name code —
   ``os:system``, ``subprocess:run``, ``builtins:exec``, a Python file that writes a marker when
   imported — and an object array whose unpickling would write the marker), given to
   ``ddm sample``, ``ddm sample --target`` and ``ddm analyze``;
2. trajectory files, mutated from one tiny valid recording, given to ``ddm fit --data``;
3. option values (nan, inf, 0, -1, 2**64, 1e308, '', random text ...) of ``ddm sample`` and
   ``ddm fit``;
4. ``--out`` naming the command's own input: the same spelling, ``./``-prefixed, through a
   symlink or a hard link.

Every run must end with exit code 0, 1 or 2 — 0 only where the change is really harmless (an
unknown metadata field, integer data, ...), and then with a valid output. A failure must print a
short message with an ``Error:`` line and no traceback, write no output and leave no ``.tmp-*``
file. In every case the input file is unchanged byte for byte, and the marker file that any code
named in (or pickled into) a file would create never appears.

Sizes: the CLI runs in-process (click's CliRunner: a subprocess costs ~1 s of imports, so only
one check uses one) on a 16-neuron model fitted once per module and a 4-trial recording of 2001
samples; the commands run ``--time 1 --trials 2`` and fits ``--neurons 8 --max-iter 2``, so
even a run that gets past validation takes well under a second. 25–40 examples per property
keep the module at 5–25 s on two cores once numba's cache holds the kernels (the upper end
with other work on the machine; a cold cache first spends ~60 s compiling them, as any test of
them does); ``derandomize=True`` makes CI replay the same examples every time, and
``DDM_FUZZ_SCALE=40`` multiplies the examples for a deeper local run (~2.5 min). Option values
that would make a legitimately long job (``--trials 10**7``, ``--max-iter 1000``) are skipped;
values large enough to be refused at once (``--trials 10**9``, ``--neurons 10**6``) are kept.

Each property's body is a plain ``check_*`` function, so ``test_fuzz_suite_catches_a_reopened_hole``
can call one directly and show that the suite fails once a file may name code again. Bugs the
fuzzing found are listed at the end (KNOWN_BUGS, all fixed): ``test_found_bug_stays_fixed``
replays the case that showed each one.
"""
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import types
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import ddm_numba
from ddm_numba.simulate import Trajectories
from ddm_numba_cli.main import main


# DDM_FUZZ_SCALE=10 pytest tests/test_fuzz.py: ten times the examples, for a deeper local run
SCALE = float(os.environ.get("DDM_FUZZ_SCALE", "1"))


def fuzz(examples):
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, derandomize=True,
                    database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


# -- the valid files everything is mutated from ---------------------------------------------

N = 16                      # neurons of the base model (double_well: d = m = 1, p = 0)
MODEL_SHAPES = {"tau": (), "sigma_private": (), "M": (N, 1), "c": (N,), "b": (N,), "A": (1, N),
                "S0": (1, 1), "R": (1, 1, N)}
TRAJ_SHAPES = {"t": (2001,), "z": (4, 2001, 1)}
RECORD = {"name": "double_well", "builtin": True, "params": {"sigma": 0.7}, "d": 1, "m": 1,
          "p": 0, "domain": [[-2.0, 2.0]], "dt": 0.01, "duration": 200.0}


class Files(dict):
    """The base files; a short repr, for hypothesis's report of a failing example."""

    def __repr__(self):
        return f"<base files in {self['root']}>"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One tiny model and one tiny recording (paths, bytes, arrays), shared by the module."""
    root = tmp_path_factory.mktemp("fuzz")
    model, traj = str(root / "base_model.npz"), str(root / "base_traj.npz")
    ddm_numba.fit("double_well", N, max_iter=5, samples=2000, progress=None).save(model)
    ddm_numba.sample_target("double_well", trials=4, time=20, seed=1, record_every=1).save(traj)
    return Files(root=str(root), model=model, traj=traj, model_bytes=read_bytes(model),
                 model_arrays=read_arrays(model), traj_arrays=read_arrays(traj))


def read_arrays(path):
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def read_bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


def fresh_dir(base):
    return tempfile.mkdtemp(dir=base["root"], prefix="case-")


# -- code a file might try to run ---------------------------------------------------------

MARKER_CODE = "open('{MARKER}', 'w').write('x')"


class PickleBomb:
    """Unpickling this runs ``code``: an object array holding one runs code if it is ever read
    with allow_pickle=True."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def pickle_bomb(marker):
    arr = np.empty(1, dtype=object)
    arr[0] = PickleBomb(MARKER_CODE.replace("{MARKER}", marker))
    return arr


def plant_code(folder):
    """A Python file that writes MARKER when imported; returns (marker path, file path)."""
    marker, evil = os.path.join(folder, "MARKER"), os.path.join(folder, "evil.py")
    with open(evil, "w") as fh:
        fh.write(MARKER_CODE.replace("{MARKER}", marker) + "\n")
    return marker, evil


# specs, and the params a factory would be called with, that write the marker if ever resolved
# ({EVIL} and {MARKER} are filled in per example, when the file is written)
CODE_SPECS = [
    ("{EVIL}:System", {}),
    ("{EVIL}:anything", {}),
    ("os:system", {"command": "touch {MARKER}"}),
    ("subprocess:run", {"args": "touch {MARKER}", "shell": True}),
    ("builtins:exec", {"source": MARKER_CODE}),
    ("builtins:eval", {"source": MARKER_CODE}),
    ("ddm_numba.systems:get_system", {"spec": "{EVIL}:System"}),
]


# -- mutations ------------------------------------------------------------------------------

SAMPLE, TARGET, ANALYZE, FIT = "sample", "sample --target", "analyze", "fit --data"
ANY = frozenset({SAMPLE, TARGET, ANALYZE, FIT})
NONE = frozenset()


@dataclass(frozen=True)
class Mutation:
    """One change to a valid file; ``ok_for``: the commands for which exit 0 is a legitimate
    outcome (the change is harmless there). Failing cleanly is always allowed."""
    kind: str
    arg: object = None
    ok_for: frozenset = NONE


def mutation(kind, ok_for=NONE):
    return lambda arg: Mutation(kind, arg, frozenset(ok_for))


def parses(kind, text):
    try:
        return kind(text)
    except (TypeError, ValueError, OverflowError):
        return None


def is_json(text):
    try:
        json.loads(text)
        return True
    except (ValueError, RecursionError):
        return False


def valid_domain(value):
    try:
        dom = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return False
    return dom.shape == (1, 2) and bool(np.all(np.isfinite(dom))) and dom[0, 0] < dom[0, 1]


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(),
                         st.text(max_size=6))
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=3) |
                           st.dictionaries(st.text(max_size=4), kids, max_size=3), max_leaves=6)
key_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
not_numbers = st.one_of(st.none(), st.text(max_size=4).filter(lambda s: parses(float, s) is None),
                        st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
not_positive = st.one_of(st.floats(max_value=0), st.just(math.nan), st.just(math.inf),
                         st.text(max_size=4), st.booleans(), st.lists(st.floats(), max_size=2))


def code_record(spec_params, name=None, builtin=False, kind=None, lenient=NONE):
    """A meta.system record that names code. Besides the commands that ignore the target
    (lenient), exit 0 is fine only where the record also resolves harmlessly: a model fitted to
    data is analyzed alone; a built-in name with no parameters is that built-in."""
    spec, params = spec_params
    record = {**RECORD, "name": spec if name is None else name, "spec": spec, "params": params}
    if builtin is None:
        record.pop("builtin")
    else:
        record["builtin"] = builtin
    ok = set(lenient)
    if kind is not None:
        record["kind"] = kind
        ok.add(ANALYZE)
    elif name == "double_well" and builtin is True and not params:
        ok |= {TARGET, ANALYZE}
    return Mutation("system", record, frozenset(ok))


def code_records(lenient):
    return st.builds(code_record, st.sampled_from(CODE_SPECS),
                     st.sampled_from([None, "double_well", "evil", "os"]),
                     st.sampled_from([False, True, None]), st.sampled_from([None, "data"]),
                     st.just(lenient))


def meta_mutations(lenient):
    """Changes to the ``meta`` key, shared by both kinds of file. ``lenient``: the commands that
    read of meta.system only its numbers (domain, dt, duration, d), not the system it names."""
    lenient = frozenset(lenient)
    domains = st.one_of(
        st.lists(st.lists(st.floats(width=32), max_size=3), max_size=3),
        st.sampled_from([[[math.nan, 1.0]], [[1.0, -1.0]], [["a", "b"]], "box", [-2.0, 2.0],
                         [[-2.0, 2.0], [-2.0, 2.0]], [[-2.0, 2.0, 0.0]], [[-1e308, 1e308]],
                         [[-2.0, math.inf]]]))
    params = st.one_of(st.dictionaries(key_names.filter(lambda k: k != "sigma"),
                                       st.floats(-2, 2), min_size=1, max_size=2),
                       st.fixed_dictionaries({"sigma": not_numbers}),
                       st.lists(st.floats(), max_size=2), st.text(max_size=3), st.integers())
    return st.one_of(
        st.text(max_size=12).filter(lambda s: not is_json(s)).map(mutation("meta_text")),
        st.one_of(st.lists(json_scalars, max_size=3), json_scalars).map(
            lambda v: Mutation("meta_text", json.dumps(v))),
        st.sampled_from([10, 10**5]).map(lambda n: Mutation("meta_text", "[" * n + "]" * n)),
        st.sampled_from(["bool", "int", "bytes", "vector"]).map(mutation("meta_array")),
        st.one_of(st.text(max_size=6), st.lists(st.integers(), max_size=2), st.integers(),
                  st.floats(), st.booleans()).map(mutation("system")),
        st.just(Mutation("system", None, lenient)),
        domains.map(lambda v: Mutation("system_field", ("domain", v),
                                       ANY if valid_domain(v) else NONE)),
        st.tuples(st.sampled_from(["dt", "duration"]), not_positive).map(
            mutation("system_field")),
        st.tuples(st.just("d"), st.one_of(st.integers(2, 5), st.integers(-3, 0), st.floats(),
                                          st.text(max_size=3))).map(mutation("system_field")),
        params.map(lambda p: Mutation("system_field", ("params", p), lenient)),
        code_records(lenient),
        st.tuples(key_names, json_values).map(mutation("meta_field", ANY)),
        st.tuples(key_names.filter(lambda k: k not in RECORD), json_values).map(
            mutation("system_field", ANY)),
    )


def byte_mutations(new_member_ok=NONE):
    """Changes to the file's bytes. new_member_ok: where a zip member that np.savez would not
    write (a text file, a path out of the archive) is harmless."""
    members = st.one_of(
        st.sampled_from(["junk.txt", "../escape.npy", "/abs.npy", "dir/x.npy"]).map(
            lambda name: Mutation("zip_member", name, new_member_ok)),
        # a second member under an existing name: which one a reader sees is not defined
        st.sampled_from(["tau.npy", "t.npy", "meta.npy"]).map(mutation("zip_member", ANY)))
    return st.one_of(
        members,
        st.binary(max_size=64).map(mutation("bytes")),
        st.floats(0, 0.999).map(mutation("truncate")),
        # a flipped byte may land in a zip field nothing checks (a time stamp): either outcome
        st.tuples(st.floats(0, 0.999), st.integers(1, 255)).map(mutation("flip", ANY)),
    )


def model_array_mutations():
    """Changes to the model's arrays and its format key (meta_mutations: its meta key)."""
    key = st.sampled_from(tuple(MODEL_SHAPES))
    shape = st.lists(st.integers(0, 4), max_size=3).map(tuple)
    new_key = key_names.filter(lambda k: k not in MODEL_SHAPES and k not in ("W", "B_in",
                                                                             "format", "meta"))
    return st.one_of(
        st.sampled_from(tuple(MODEL_SHAPES) + ("format",)).map(mutation("drop")),
        st.just(Mutation("drop", "meta", frozenset({SAMPLE}))),
        new_key.map(mutation("add")),
        st.just(Mutation("add_pickle")),
        st.tuples(key, shape).filter(lambda ks: ks[1] != MODEL_SHAPES[ks[0]]).map(
            mutation("shape")),
        st.tuples(key, st.sampled_from(["bool", "complex", "str", "bytes", "pickle"])).map(
            mutation("dtype")),
        # integers are read as floats; rounding may leave M rank-deficient: either outcome
        key.map(lambda k: Mutation("dtype", (k, "int"), ANY)),
        st.tuples(key, st.sampled_from([math.nan, math.inf, -math.inf]), st.booleans()).map(
            mutation("nonfinite")),
        st.text(max_size=30).filter(lambda s: s != "ddm_numba.model/1").map(mutation("format")),
    )


def traj_mutations():
    key = st.sampled_from(["t", "z"])
    shape = st.lists(st.integers(0, 5), max_size=4).map(tuple)
    step = st.integers(0, 2000)
    return st.one_of(
        key.map(mutation("drop")),
        st.sampled_from(["meta", "format"]).map(mutation("drop", ANY)),
        st.tuples(key, shape).filter(lambda ks: ks[1] != TRAJ_SHAPES[ks[0]]).map(
            mutation("shape")),
        st.just(Mutation("z_d2")),
        st.tuples(key, st.sampled_from(["bool", "complex", "str", "bytes", "pickle"])).map(
            mutation("dtype")),
        key.map(lambda k: Mutation("dtype", (k, "int"), ANY)),      # read with a warning
        st.sampled_from(["reverse", "repeat"]).map(mutation("t_order")),
        st.tuples(step, step).filter(lambda ij: ij[0] != ij[1]).map(mutation("t_swap")),
        st.tuples(step, st.floats(0.01, 0.45)).map(mutation("t_jitter")),
        st.tuples(step, st.sampled_from([math.nan, math.inf])).map(mutation("t_nonfinite")),
        st.tuples(step, st.just(math.inf)).map(mutation("z_nonfinite")),
        st.tuples(step, st.just(math.nan)).map(mutation("z_nonfinite", ANY)),   # a gap
        st.just(Mutation("z_all_nan")),
        st.floats(-1e6, 1e6).map(mutation("z_constant")),
        st.sampled_from([1e150, 1e200, 1e308, math.inf]).map(mutation("z_scale")),
        st.sampled_from([1e-300, 1e-12]).map(mutation("z_scale", ANY)),
        st.just(Mutation("t_scale", 1e200)),
        st.sampled_from([1e-300, 1e-12, 1e12, 1e90]).map(mutation("t_scale", ANY)),
        st.tuples(st.sampled_from(["x", "u"]), shape).map(mutation("add_array")),
        key_names.filter(lambda k: k not in ("t", "z", "x", "u", "meta", "format")).map(
            mutation("add", ANY)),
        st.just(Mutation("add_pickle")),
        meta_mutations(lenient={FIT}),
        byte_mutations(new_member_ok=ANY),
    )


# -- writing a mutated file -------------------------------------------------------------

def retype(value, kind, marker):
    if kind == "pickle":
        return pickle_bomb(marker)
    return np.asarray(value).astype({"bool": bool, "complex": complex, "str": str,
                                     "bytes": bytes, "int": np.int64}[kind])


def mutate_meta(arrays, m, marker, evil):
    if m.kind == "meta_text":
        arrays["meta"] = np.array(m.arg)
        return
    if m.kind == "meta_array":
        arrays["meta"] = {"bool": np.array(True), "int": np.array(3), "bytes": np.array(b"{}"),
                          "vector": np.array(["{}", "{}"])}[m.arg]
        return
    meta = json.loads(str(arrays["meta"]))
    if m.kind == "system":
        meta["system"] = m.arg
    elif m.kind == "system_field":
        meta["system"] = {**meta.get("system", RECORD), m.arg[0]: m.arg[1]}
    else:                                                       # meta_field
        meta[m.arg[0]] = m.arg[1]
    text = json.dumps(meta).replace("{MARKER}", marker).replace("{EVIL}", evil)
    arrays["meta"] = np.array(text)


def mutate_traj(arrays, m):
    t, z = arrays["t"].copy(), arrays["z"].copy()
    if m.kind == "z_d2":
        z = np.concatenate([z, -z], axis=2)
    elif m.kind == "t_order":
        if m.arg == "reverse":
            t = t[::-1].copy()
        else:
            t[5] = t[4]
    elif m.kind == "t_swap":
        i, j = m.arg
        t[i], t[j] = t[j], t[i]
    elif m.kind == "t_jitter":
        t[m.arg[0]] += m.arg[1] * (t[1] - t[0])
    elif m.kind == "t_nonfinite":
        t[m.arg[0]] = m.arg[1]
    elif m.kind == "z_nonfinite":
        z[0, m.arg[0], 0] = m.arg[1]
    elif m.kind == "z_all_nan":
        z[:] = np.nan
    elif m.kind == "z_constant":
        z[:] = m.arg
    elif m.kind == "z_scale":
        with np.errstate(over="ignore"):
            z = z * m.arg
    elif m.kind == "t_scale":
        t = t * m.arg
    elif m.kind == "add_array":
        arrays[m.arg[0]] = np.ones(m.arg[1])
    else:
        raise AssertionError(f"unknown mutation {m}")
    arrays["t"], arrays["z"] = t, z


BYTE_KINDS = ("bytes", "truncate", "flip")


def mutated_bytes(source, m):
    """The bytes of the file at source after a byte-level mutation."""
    if m.kind == "bytes":
        return m.arg
    data = bytearray(read_bytes(source))
    if m.kind == "truncate":
        return bytes(data[:int(m.arg * len(data))])
    data[int(m.arg[0] * len(data))] ^= m.arg[1]
    return bytes(data)


def write_mutated(source, arrays, m, dst, marker, evil):
    """The valid file (path source, its arrays) with mutation m applied, written to dst."""
    if m.kind == "zip_member":
        shutil.copyfile(source, dst)
        payload = io.BytesIO()
        np.save(payload, np.zeros(3))
        with warnings.catch_warnings(), zipfile.ZipFile(dst, "a") as zf:
            warnings.simplefilter("ignore")             # "Duplicate name"
            zf.writestr(m.arg, payload.getvalue() if m.arg.endswith(".npy") else b"hello")
        return
    if m.kind in BYTE_KINDS:
        with open(dst, "wb") as fh:
            fh.write(mutated_bytes(source, m))
        return
    arrays = dict(arrays)
    if m.kind == "drop":
        arrays.pop(m.arg)
    elif m.kind == "add":
        arrays[m.arg] = np.zeros(3)
    elif m.kind == "add_pickle":
        arrays["bomb"] = pickle_bomb(marker)
    elif m.kind == "shape":
        arrays[m.arg[0]] = np.ones(m.arg[1])
    elif m.kind == "dtype":
        arrays[m.arg[0]] = retype(arrays[m.arg[0]], m.arg[1], marker)
    elif m.kind == "nonfinite":
        key, value, everywhere = m.arg
        arr = arrays[key].astype(float)
        arr.reshape(-1)[slice(None) if everywhere else -1] = value
        arrays[key] = arr
    elif m.kind == "format":
        arrays["format"] = np.array(m.arg)
    elif m.kind in ("meta_text", "meta_array", "system", "system_field", "meta_field"):
        mutate_meta(arrays, m, marker, evil)
    else:
        mutate_traj(arrays, m)
    np.savez(dst, **arrays)          # pickles object arrays: a pickle bomb goes in as it is


# -- running the CLI and judging the outcome ---------------------------------------------

def run_cli(args):
    """`ddm ARGS` in-process. An exception escaping the CLI fails the check: a user would see
    its traceback."""
    args = [str(a) for a in args]
    result = CliRunner().invoke(main, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        tb = "".join(traceback.format_exception(*result.exc_info))
        raise AssertionError(f"`ddm {' '.join(args)}` crashed with a traceback:\n{tb}")
    return result


def listing(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def check_outcome(result, args, *, ok, inputs, outputs, folder, marker=None, valid=None):
    """The assertions every fuzzed run shares (see the module docstring). inputs: {path: bytes
    before the run}; outputs: files or folders the command would write."""
    what, out = f"`ddm {' '.join(map(str, args))}`", result.output
    assert marker is None or not os.path.exists(marker), f"{what} ran code named in a file"
    for path, before in inputs.items():
        assert read_bytes(path) == before, f"{what} changed its input {path}"
    tmp = [f for d in {folder, *outputs} for f in listing(d) if f.startswith(".tmp-")]
    assert not tmp, f"{what} left temporary files {tmp}"
    assert result.exit_code in (0, 1, 2), f"{what} exited {result.exit_code}:\n{out}"
    if result.exit_code == 0:
        assert ok, f"{what} accepted a malformed input (exit 0):\n{out}"
        if valid is not None:
            valid()
        return
    assert "Traceback" not in out, f"{what} printed a traceback:\n{out}"
    assert len(out) < 1500, f"{what} printed {len(out)} characters:\n{out}"
    assert any(line.startswith("Error:") for line in out.splitlines()), \
        f"{what} failed without an 'Error:' line:\n{out}"
    for path in outputs:
        assert not os.path.exists(path) or (os.path.isdir(path) and not listing(path)), \
            f"{what} failed (exit {result.exit_code}) but wrote {path}"


def valid_trajectories(path, trials):
    def check():
        traj = Trajectories.load(path)
        assert traj.z.shape[0] == trials and np.all(np.isfinite(traj.z))
    return check


def valid_model(path):
    return lambda: ddm_numba.load_model(path)


def valid_report(folder):
    def check():
        with open(os.path.join(folder, "report.json")) as fh:
            assert json.load(fh)["format"] == "ddm_numba.report/1"
    return check


def model_command(command, model, folder):
    """(args, output path, validator) for one of the commands that read a model."""
    if command == ANALYZE:
        out = os.path.join(folder, "report")
        return (["analyze", model, "--no-figures", "--trials", 2, "--time", 1, "--out", out],
                out, valid_report(out))
    out = os.path.join(folder, "T.npz")
    target = ["--target"] if command == TARGET else []
    return (["sample", model, *target, "--out", out, "--time", 1, "--trials", 2], out,
            valid_trajectories(out, 2))


# -- 1. malformed model files ------------------------------------------------------------

def check_model_file(base, m, command, folder=None):
    folder = folder or fresh_dir(base)
    marker, evil = plant_code(folder)
    model = os.path.join(folder, "M.npz")
    write_mutated(base["model"], base["model_arrays"], m, model, marker, evil)
    args, out, valid = model_command(command, model, folder)
    inputs = {model: read_bytes(model)}
    check_outcome(run_cli(args), args, ok=command in m.ok_for, inputs=inputs, outputs=[out],
                  folder=folder, marker=marker, valid=valid)


model_commands = st.sampled_from([SAMPLE, TARGET, ANALYZE])


@fuzz(30)
@given(m=st.one_of(model_array_mutations(), byte_mutations()), command=model_commands)
def test_malformed_model_arrays_and_bytes(base, m, command):
    assume(not known_bug("model", base, m, command))
    check_model_file(base, m, command)


@fuzz(30)
@given(m=meta_mutations(lenient={SAMPLE}), command=model_commands)
def test_malformed_model_metadata(base, m, command):
    assume(not known_bug("model", base, m, command))
    check_model_file(base, m, command)


@fuzz(25)
@given(m=st.one_of(code_records(lenient={SAMPLE}), st.just(Mutation("add_pickle")),
                   st.sampled_from(list(MODEL_SHAPES)).map(lambda k: Mutation("dtype",
                                                                              (k, "pickle")))),
       command=model_commands)
def test_model_files_never_run_code(base, m, command):
    assume(not known_bug("model", base, m, command))
    check_model_file(base, m, command)


# -- 2. malformed trajectory files -------------------------------------------------------

def check_traj_file(base, m):
    folder = fresh_dir(base)
    marker, evil = plant_code(folder)
    traj, out = os.path.join(folder, "T.npz"), os.path.join(folder, "M.npz")
    write_mutated(base["traj"], base["traj_arrays"], m, traj, marker, evil)
    args = ["fit", "--data", traj, "--out", out, "--neurons", 8, "--max-iter", 2, "-q"]
    inputs = {traj: read_bytes(traj)}
    check_outcome(run_cli(args), args, ok=FIT in m.ok_for, inputs=inputs, outputs=[out],
                  folder=folder, marker=marker, valid=valid_model(out))


@fuzz(40)
@given(m=traj_mutations())
def test_malformed_trajectory_files(base, m):
    assume(not known_bug("trajectory", base, m))
    check_traj_file(base, m)


# -- 3. option values ---------------------------------------------------------------------

NASTY = ["nan", "-nan", "inf", "-inf", "Infinity", "-1", "0", "-0", "", " ", "1", "0.5", "3.0",
         str(2**64), str(2**63), str(2**63 - 1), str(-2**63), "1e308", "-1e308", "1e309",
         "1e-308", "5e-324", "1e300", "1e-300", "1e-7", "1e5", "0x10", "1_0", " 3 ", "abc",
         "--help"]
values = st.one_of(st.sampled_from(NASTY), st.integers(-2**70, 2**70).map(str),
                   st.floats().map(repr), st.text(max_size=6))
input_values = st.one_of(values, st.lists(values, min_size=3, max_size=3).map(":".join))

# option: (values, (the numbers that would make a legitimately long job, skipped))
SAMPLE_OPTIONS = {
    "--trials": (values, lambda v: 50 < parses(int, v) < 10**9),
    "--time": (values, lambda v: 5 < parses(float, v) <= 2e7),     # 2e7 / dt 0.01: 2e9 steps
    "--dt": (values, lambda v: 1e-9 <= parses(float, v) < 1e-5),  # 1 / dt: 1e5 to 1e9 steps
    "--seed": (values, None),
    "--record-every": (values, None),
    "--burn-in": (values, None),
    "--input": (input_values, None),
}
FIT_OPTIONS = {
    "--neurons": (values, lambda v: 64 < parses(int, v) < 10**6),
    "--tau": (values, None),
    "--reg": (values, None),
    "--samples": (values, lambda v: 20000 < parses(int, v) < 10**12),
    "--max-iter": (values, lambda v: parses(int, v) > 50),
    "--param": (values.map(lambda v: "sigma=" + v), None),
    "--visited": (values, None),
    "--visit-runs": (values, lambda v: parses(int, v) > 256),
    "--check-time": (values, lambda v: parses(float, v) > 100),
    "--method": (st.one_of(values, st.sampled_from(["auto", "varpro", "joint"])), None),
}


def long_job(skip, value):
    """Whether the value parses as a number in the skipped range (None never is)."""
    try:
        return skip is not None and bool(skip(value))
    except TypeError:                    # the value does not parse: comparing None
        return False


def option_cases(options):
    return st.sampled_from(sorted(options)).flatmap(
        lambda name: st.tuples(st.just(name), options[name][0]))


def check_sample_option(base, option, value):
    folder = fresh_dir(base)
    out, png = os.path.join(folder, "T.npz"), os.path.join(folder, "P.png")
    args = ["sample", base["model"], "--out", out, "--time", 1, "--trials", 2,
            f"{option}={value}"]          # the last --time/--trials wins; '=' keeps '-1' a value
    outputs = [out]
    if option == "--burn-in":             # read only with --plot
        args += ["--plot", png]
        outputs.append(png)
    trials = parses(int, value) if option == "--trials" else 2

    def valid():
        valid_trajectories(out, trials)()
        if option == "--burn-in":
            assert read_bytes(png)[:8] == b"\x89PNG\r\n\x1a\n"
    check_outcome(run_cli(args), args, ok=True, inputs={base["model"]: base["model_bytes"]},
                  outputs=outputs, folder=folder, valid=valid)


def check_fit_option(base, option, value):
    folder = fresh_dir(base)
    out = os.path.join(folder, "F.npz")
    args = ["fit", "double_well", "--out", out, "-q", "--neurons", 8, "--max-iter", 2,
            f"{option}={value}"]
    check_outcome(run_cli(args), args, ok=True, inputs={}, outputs=[out], folder=folder,
                  valid=valid_model(out))


@fuzz(40)
@given(case=option_cases(SAMPLE_OPTIONS))
def test_sample_option_values(base, case):
    option, value = case
    assume(not long_job(SAMPLE_OPTIONS[option][1], value))
    assume(not known_bug("sample option", base, option, value))
    check_sample_option(base, option, value)


@pytest.mark.slow       # 24 s, the default run's slowest test: with the long ones (.ci/run runs it)
@fuzz(40)
@given(case=option_cases(FIT_OPTIONS))
def test_fit_option_values(base, case):
    option, value = case
    assume(not long_job(FIT_OPTIONS[option][1], value))
    assume(not known_bug("fit option", base, option, value))
    check_fit_option(base, option, value)


# -- 4. --out naming the input ------------------------------------------------------------

def spellings(folder, name):
    """The same file under other names: itself, ./name, a symlink, a hard link."""
    path = os.path.join(folder, name)
    link, hard = os.path.join(folder, "link.npz"), os.path.join(folder, "hard.npz")
    os.symlink(path, link)
    os.link(path, hard)
    return {"same": path, "dot": os.path.join(folder, ".", name),
            "relative": os.path.relpath(path), "symlink": link, "hardlink": hard}


def check_out_is_input(base, source, command):
    for spelling in ("same", "dot", "relative", "symlink", "hardlink"):
        folder = fresh_dir(base)
        path = os.path.join(folder, "in.npz")
        with open(path, "wb") as fh:
            fh.write(read_bytes(source))
        out = spellings(folder, "in.npz")[spelling]
        args = command(path, out)
        result = run_cli(args)
        assert result.exit_code == 2, (spelling, result.output)
        check_outcome(result, args, ok=False, inputs={path: read_bytes(source)}, outputs=[],
                      folder=folder)


def test_out_never_overwrites_the_input(base):
    check_out_is_input(base, base["model"], lambda model, out: [
        "sample", model, "--out", out, "--time", 1, "--trials", 2])
    check_out_is_input(base, base["model"], lambda model, out: [
        "sample", model, "--target", "--out", out, "--time", 1, "--trials", 2])
    check_out_is_input(base, base["traj"], lambda traj, out: [
        "fit", "--data", traj, "--out", out, "--neurons", 8, "--max-iter", 2, "-q"])


# -- the real process, once ---------------------------------------------------------------

def test_a_code_naming_file_in_a_real_process(base, tmp_path):
    """The same promise through the installed `ddm` script: exit 1, one clean line, no code."""
    folder = str(tmp_path)
    marker, evil = plant_code(folder)
    model = os.path.join(folder, "M.npz")
    write_mutated(base["model"], base["model_arrays"], code_record(CODE_SPECS[0]), model,
                  marker, evil)
    script = os.path.join(os.path.dirname(sys.executable), "ddm")
    cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "ddm_numba_cli.main"]
    args = ["sample", model, "--target", "--out", os.path.join(folder, "T.npz"), "--time", "1",
            "--trials", "2"]
    inputs = {model: read_bytes(model)}
    proc = subprocess.run(cmd + args, capture_output=True, text=True, timeout=120)
    result = types.SimpleNamespace(exit_code=proc.returncode, output=proc.stdout + proc.stderr)
    check_outcome(result, args, ok=False, inputs=inputs, outputs=[args[4]], folder=folder,
                  marker=marker)
    assert proc.returncode == 1 and "--system" in proc.stderr, proc.stderr


# -- the suite can fail -----------------------------------------------------------------

def test_fuzz_suite_catches_a_reopened_hole(base, monkeypatch):
    """With the old, unsafe reading of meta.system (resolve record["spec"] with get_system),
    the code-naming check fails: the marker file appears."""
    from ddm_numba import simulate, systems
    from ddm_numba.learn import fit as learn
    safe = systems.system_from_record

    def unsafe(record, given=None, what="this model"):
        if given is None and isinstance(record, dict) and isinstance(record.get("spec"), str):
            return systems.get_system(record["spec"], **record.get("params", {}))
        return safe(record, given, what)

    for module in (systems, simulate, learn):     # the modules that import the name
        monkeypatch.setattr(module, "system_from_record", unsafe)
    folder = fresh_dir(base)
    with pytest.raises(AssertionError, match="ran code named in a file"):
        check_model_file(base, code_record(CODE_SPECS[0]), TARGET, folder=folder)
    assert os.path.exists(os.path.join(folder, "MARKER"))


# -- bugs this fuzzing found (all fixed) -----------------------------------------------------
# Each entry replays the first case that showed the bug; test_found_bug_stays_fixed runs it as
# an ordinary check. A bug the fuzzing finds that cannot be fixed at once goes here with
# ``open=True``: the properties then skip its cases, and its replay is expected to fail (xfail);
# once it passes, the test fails until the entry is closed.

@dataclass(frozen=True)
class KnownBug:
    tests: tuple            # the properties whose cases it concerns
    skips: object           # (base, *case) -> whether the case hits the bug
    replay: object          # base -> runs a check that fails while the bug is there
    open: bool = False      # True: not fixed yet (skipped by the properties, replayed as xfail)


def system_is_null(base, m, command):
    return m.kind == "system" and m.arg is None and command != TARGET


def tau_squared_breaks(base, option, value):
    """--tau whose square is 0.0 or overflows (matching.fit divides by tau ** 2)."""
    tau = parses(float, value) if option == "--tau" else None
    if tau is None or not 0 < tau < math.inf:
        return False
    try:
        return tau ** 2 == 0.0
    except OverflowError:
        return True


def steps_overflow(base, option, value):
    """--time / --dt that make time / dt (dt 0.01, time 1) beyond ~1e304."""
    x = parses(float, value)
    return x is not None and ((option == "--time" and 1e302 < x < math.inf) or
                              (option == "--dt" and 0 < x < 1e-302))


def tiny_sampling_interval(base, m):
    return m.kind == "t_scale" and m.arg < 1e-150


def long_zip_error(base, m, *command):
    """Whether np.load fails on the mutated base file (the model's in the model properties,
    which pass a command) with an exception text over 500 characters."""
    if m.kind not in BYTE_KINDS:
        return False
    source = base["model"] if command else base["traj"]
    try:
        with np.load(io.BytesIO(mutated_bytes(source, m)), allow_pickle=False) as data:
            for key in data.files:
                data[key]
    except Exception as exc:
        return len(str(exc)) > 500
    return False


def name_length_flipped(base):
    """The base model with the high byte of its first zip member's file-name length (offset 27
    of the first local header) flipped: zipfile then reads ~800 bytes as the name."""
    data = bytearray(base["model_bytes"])
    data[27] ^= 3
    return Mutation("bytes", bytes(data))


KNOWN_BUGS = {
    # `ddm sample M.npz --out T.npz` and `ddm analyze M.npz` on a model whose meta holds
    # "system": null: AttributeError 'NoneType' object has no attribute 'get' (cli/main.py,
    # sample: net.meta.get("system", {}).get("dt"); simulate.sample_network; analysis.report)
    "meta.system is null": KnownBug(
        ("model",), system_is_null,
        lambda base: check_model_file(base, Mutation("system", None, frozenset({SAMPLE})),
                                      SAMPLE)),
    # `ddm fit double_well --out F.npz --tau 1e-200`: ZeroDivisionError; `--tau 1e160`:
    # OverflowError (matching.fit: reg * mean(lam) / tau ** 2)
    "fit --tau whose square under/overflows": KnownBug(
        ("fit option",), tau_squared_breaks,
        lambda base: check_fit_option(base, "--tau", "1e-200")),
    # `ddm sample M.npz --out T.npz --time 1e308` (or --dt 5e-324, or --time 1e306):
    # OverflowError in the CLI's size estimate, int(round(duration / step)) and human(size),
    # before sample_network's own MAX_STEPS check could refuse the run
    "sample --time / --dt with 1e305+ steps": KnownBug(
        ("sample option",), steps_overflow,
        lambda base: check_sample_option(base, "--time", "1e308")),
    # `ddm fit --data T.npz` with tiny time stamps (t scaled by 1e-300: sampling interval
    # 1e-302): ValueError 'array must not contain infs or NaNs' from scipy.linalg.solve in
    # learn/fit.py (the ridge solve): the increments / dt overflow
    "fit --data with a sampling interval below ~1e-160": KnownBug(
        ("trajectory",), tiny_sampling_interval,
        lambda base: check_traj_file(base, Mutation("t_scale", 1e-300, ANY))),
    # a flipped byte in a zip header's file-name length: read_npz puts zipfile's BadZipFile
    # text into its error, and that text quotes the header's raw bytes (1.7 KB here, up to
    # 64 KB): python -c "d = bytearray(open('M.npz', 'rb').read()); d[27] ^= 3;
    # open('bad.npz', 'wb').write(d)"; ddm sample bad.npz --out T.npz
    "a zip error that quotes raw bytes": KnownBug(
        ("model", "trajectory"), long_zip_error,
        lambda base: check_model_file(base, name_length_flipped(base), SAMPLE)),
}


def known_bug(test, base, *case):
    return any(bug.open and test in bug.tests and bug.skips(base, *case)
               for bug in KNOWN_BUGS.values())


@pytest.mark.parametrize("name", sorted(KNOWN_BUGS))
def test_found_bug_stays_fixed(base, name):
    bug = KNOWN_BUGS[name]
    if bug.open:
        try:
            bug.replay(base)
        except AssertionError:
            pytest.xfail("a bug the fuzzing found, not fixed yet")
        pytest.fail(f"{name!r} is fixed now: set open=False in its KNOWN_BUGS entry")
    bug.replay(base)
