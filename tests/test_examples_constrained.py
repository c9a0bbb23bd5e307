"""examples/constrained_circuits.py in its quick setting (128 neurons, mask density 0.1, 80 %
excitatory): the constraints hold in the fitted files, the figures are written, and the online
rules learn. The figures of merit themselves are reported in the JSON (and in the issue's
note); this checks what must hold whatever they are."""
import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_constrained_circuits_quick(tmp_path, load_example):
    res = load_example("constrained_circuits").run(str(tmp_path), quick=True)
    assert (tmp_path / "constrained_circuits.png").stat().st_size > 10000
    with open(tmp_path / "constrained_circuits.json") as fh:
        assert json.load(fh)["density"] == 0.1
    for name in ("sequential", "associative"):
        c = res[name]["constraints"]
        assert c["zero_outside_mask"] and c["columns_keep_sign"], (name, c)
        # the binomial density of a 128 × 128 random mask: 0.1 ± 4 standard deviations
        assert abs(c["density"] - 0.1) < 4 * np.sqrt(0.09 / 128 ** 2)
        assert c["nonzero_fraction"] <= c["density"]
    online = res["online"]
    assert online["within_2x_of_fixed_embedding_batch"], online["e_f"]
    assert online["curve"]["e_f"][-1] < online["curve"]["e_f"][0]
    curve = online["delta"]["curve"]["e_f"]
    assert curve[-1] < 0.5 * curve[0], curve
    # the figures of merit are reported, whatever they are (NaN: the network made no transition)
    for key in ("forward_fraction", "mean_dwell"):
        assert isinstance(res["sequential"][key]["network"], float)
        assert np.isfinite(res["sequential"][key]["target"])
    assert 0 <= res["associative"]["success"]["network"] <= 1
    assert res["associative"]["success"]["target"] >= 0.9       # the target does follow cues
