"""`ddm warmup`: after it, a first real fit, sample and fit from data compile nothing.

Both steps run in fresh processes with their own numba cache folder (NUMBA_CACHE_DIR), so the
first starts cold and the second can only be warm through what the first left on disk. A cache
hit raises no "numba:compile" event (ddm_numba/_jit.py), so the second process counts those
events: zero means every kernel came from the cache.
"""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow     # the cold warm-up compiles every kernel once: about a minute

AFTER = r"""
import json
from numba.core import event
from ddm_numba import fit, fit_data, sample_network, sample_target

class Count(event.Listener):
    n = 0
    def on_start(self, ev):
        Count.n += 1
    def on_end(self, ev):
        pass

event.register("numba:compile", Count())
net = fit("double_well", 24, seed=3, max_iter=5, progress=None, self_check_time=0, device="cpu")
sample_network(net, trials=3, time=1.0, seed=1, device="cpu")
data = sample_target("double_well", trials=6, time=30.0, seed=2, record_every=5)
fit_data(data, 16, seed=1, substeps=2, refine_iter=2, progress=None, device="cpu")
print("COMPILES" + json.dumps(Count.n))
"""


def test_after_warmup_a_first_fit_compiles_nothing(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    cold = subprocess.run([sys.executable, "-m", "ddm_numba_cli.main", "warmup", "--dims", "1"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert cold.returncode == 0, cold.stderr[-2000:]
    assert "compiled for d = 1" in cold.stdout
    assert "compiling numba kernels" in cold.stderr      # it did compile, and said so
    warm = subprocess.run([sys.executable, "-c", AFTER], env=env, capture_output=True,
                          text=True, timeout=600)
    assert warm.returncode == 0, warm.stderr[-2000:]
    line = [s for s in warm.stdout.splitlines() if s.startswith("COMPILES")][-1]
    assert json.loads(line[len("COMPILES"):]) == 0, warm.stderr[-2000:]


def test_warmup_refuses_an_unknown_dimension():
    proc = subprocess.run([sys.executable, "-m", "ddm_numba_cli.main", "warmup", "--dims", "7"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "latent dimensions" in proc.stderr
    assert "Traceback" not in proc.stderr
