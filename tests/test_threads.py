"""threads.Governor: the numba thread count follows the load (a fake clock stands in for it)."""
import numba
import pytest

from ddm_numba import threads

pytestmark = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                reason="needs numba with at least 2 threads")


def _fake(monkeypatch, cost):
    """A call whose duration (on a fake clock) is cost[threads it runs with]."""
    clock = [0.0]
    monkeypatch.setattr(threads.time, "perf_counter", lambda: clock[0])

    def call():
        clock[0] += cost[numba.get_num_threads()]
    return call


def test_the_governor_picks_the_faster_count_and_follows_the_load(monkeypatch):
    cost = {1: 1.0, 2: 0.6}                       # quiet: two threads win
    call = _fake(monkeypatch, cost)
    threads._last.choice = 2
    gov = threads.Governor(max_threads=2)
    before = numba.get_num_threads()
    for _ in range(64):
        gov.run(call)
    assert numba.get_num_threads() == before      # the caller's count is restored
    assert gov.summary()["chosen"] == 2
    assert gov.used[1] <= 1 + 64 // threads.PROBE_EVERY        # the try and the probes only
    # another job arrives: two threads wait at every barrier (10× slower), one thread does not
    cost[2] = 10.0
    used2 = gov.used[2]
    for _ in range(400):
        gov.run(call)
    assert gov.summary()["chosen"] == 1
    # losing probes back off (16, 32, 64, 128, ... calls apart): a handful of slow calls in 400
    assert gov.used[2] - used2 <= 8, gov.used
    # the job leaves: the next probe finds two threads faster again and the governor returns
    cost[2] = 0.6
    for _ in range(threads.MAX_INTERVAL + 20):
        gov.run(call)
    assert gov.summary()["chosen"] == 2


def test_a_new_loop_starts_where_the_last_one_settled(monkeypatch):
    """The stages of a fit are loops one after another: under load the second does not pay the
    slow calls again (it starts at one thread and probes two only later)."""
    call = _fake(monkeypatch, {1: 1.0, 2: 10.0})
    first = threads.Governor(max_threads=2)
    for _ in range(40):
        first.run(call)
    assert first.best() == 1
    second = threads.Governor(max_threads=2)
    for _ in range(40):
        second.run(call)
    assert second.used[2] <= 2, second.used


def test_work_normalizes_calls_of_unequal_size(monkeypatch):
    """Sampling chunks differ in steps: the time per unit of work is compared, not per call."""
    clock = [0.0]
    monkeypatch.setattr(threads.time, "perf_counter", lambda: clock[0])
    per_step = {1: 1.0, 2: 0.6}

    def chunk(n):
        clock[0] += n * per_step[numba.get_num_threads()]
    threads._last.choice = 2
    gov = threads.Governor(max_threads=2)
    sizes = [1, 100, 1, 100, 3, 50, 7, 9, 200, 1] * 4    # two threads get the small chunks early
    for n in sizes:
        gov.run(chunk, n, work=n)
    assert gov.summary()["chosen"] == 2


def test_probing_says_which_calls_try_another_count(monkeypatch):
    """Governor.probing() before a call is True exactly when that call runs with another count
    than the best so far (the sampler makes those calls short), under both loads."""
    cost = {1: 1.0, 2: 0.6}
    call = _fake(monkeypatch, cost)
    threads._last.choice = 2
    gov = threads.Governor(max_threads=2)
    seen = []
    for k in range(300):
        if k == 150:
            cost[2] = 10.0                        # the load arrives halfway
        predicted, best = gov.probing(), gov.best()
        used = dict(gov.used)
        gov.run(call)
        ran = next(t for t in gov.used if gov.used[t] != used[t])
        seen.append(predicted)
        assert predicted == (ran != best), (k, predicted, ran, best)
    assert 4 <= sum(seen) <= 30                   # some probes, a few: backing off under load
