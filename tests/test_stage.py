import time
from itertools import count

from factory.executors.local import LocalExecutor
from factory.records import Record
from factory.stage import Filter, Resources, Stage


class Doubler(Stage):
    name = "doubler"

    def process(self, records):
        for r in records:
            if r.meta["x"] < 0:
                raise ValueError("negative")
            r.meta["x"] *= 2
        return records


class Threshold(Filter):
    name = "thr"

    def __init__(self):
        super().__init__({"x": (">=", 4.0)})

    def score(self, record):
        return {"x": float(record.meta["x"])}


def recs(*xs):
    return [Record(f"k{i}", "pair", meta={"x": x}) for i, x in enumerate(xs)]


def test_a_failing_record_is_isolated_and_recorded():
    stage = Doubler()
    out = stage(recs(1, -1, 3))
    assert [r.meta["x"] for r in out if not r.rejected] == [2, 6]
    bad = [r for r in out if r.rejected]
    assert [r.key for r in bad] == ["k1"] and bad[0].rejected == "doubler_error:ValueError"
    assert stage.stats == {"passed": 2, "dropped_doubler_error:ValueError": 1}


def test_filter_records_scores_applies_threshold_and_counts():
    f = Threshold()
    out = f(recs(5, 1, 4))
    assert [r.meta["scores"]["x"] for r in out] == [5.0, 1.0, 4.0]  # every score kept, kept or not
    assert [r.rejected for r in out] == [None, "x_below_4", None]
    assert f.stats == {"passed": 2, "dropped_x_below_4": 1}


def test_rejected_records_pass_through_untouched():
    r = Record("k", "pair", meta={"x": 1}).reject("earlier", "x")
    out = Doubler()([r])
    assert out == [r] and r.meta["x"] == 1


class Flaky(Stage):
    """Fails the first time it sees each record: a transient error."""

    name = "flaky"

    def __init__(self):
        super().__init__()
        self.seen = set()

    def process(self, records):
        for r in records:
            if r.key not in self.seen:
                self.seen.add(r.key)
                raise RuntimeError("busy")
            r.meta["done"] = True
        return records


def test_a_transient_error_is_retried():
    out = Flaky()(recs(1, 2))
    assert [r.rejected for r in out] == [None, None] and all(r.meta["done"] for r in out)


# -- the stage hooks as the local executor drives them: batch sizes, teardown, counts ----------

class Logged(Stage):
    """Logs its setups, teardowns and the sizes of the batches it processes; rejects x in `bad`."""

    name = "logged"

    def __init__(self, batch_size=1, bad=(), name="logged"):
        super().__init__(Resources(batch_size=batch_size))
        self.name, self.bad, self.log = name, set(bad), []

    def setup(self):
        self.log.append("setup")

    def teardown(self):
        self.log.append("teardown")

    def process(self, records):
        self.log.append(len(records))
        return [r.reject("bad", self.name) if r.meta["x"] in self.bad else r for r in records]


def test_local_executor_gives_each_stage_batches_of_its_own_size_in_order():
    first, second = Logged(batch_size=3, bad={1, 4}, name="first"), Logged(batch_size=2, name="second")
    out = list(LocalExecutor().map([first, second], recs(*range(8))))
    assert [r.key for r in out if not r.rejected] == ["k0", "k2", "k3", "k5", "k6", "k7"]  # input order
    assert [r.key for r in out if r.rejected] == ["k1", "k4"]  # (first in their batch: Stage.__call__)
    assert [n for n in first.log if isinstance(n, int)] == [3, 3, 2]
    assert [n for n in second.log if isinstance(n, int)] == [2, 2, 2]  # the rejected ones take no slot


def test_local_executor_streams():
    pulled = []

    def source():
        for x in count():
            pulled.append(x)
            yield Record(f"k{x}", "pair", meta={"x": x})

    stream = LocalExecutor().map([Logged(batch_size=2), Logged(batch_size=3)], source())
    assert next(stream).key == "k0"
    assert len(pulled) <= 4  # two batches of two fill the second stage's batch of three
    stream.close()


def test_local_executor_tears_down_the_stages_it_set_up():
    done, abandoned, theirs = Logged(), Logged(), Logged()
    list(LocalExecutor().map([done], recs(1, 2)))
    assert done.log == ["setup", 1, 1, "teardown"] and not done.is_set_up

    stream = LocalExecutor().map([abandoned], recs(1, 2, 3))
    next(stream)
    stream.close()
    assert abandoned.log[-1] == "teardown"

    theirs([])  # set up by its caller, who tears it down
    list(LocalExecutor().map([theirs], recs(1)))
    assert "teardown" not in theirs.log and theirs.is_set_up


class Slow(Stage):
    name = "slow"

    def process(self, records):
        time.sleep(0.01 * len(records))
        return records


def test_local_executor_reports_counts_and_time_per_stage_over_every_map():
    executor, threshold, slow = LocalExecutor(), Threshold(), Slow(Resources(batch_size=2))
    list(executor.map([slow, threshold], recs(5, 1, 4)))
    list(executor.map([slow, threshold], recs(0)))
    stats = executor.stage_stats()
    assert stats["thr"] == {"records": 4, "seconds": stats["thr"]["seconds"], "passed": 2, "dropped_x_below_4": 2}
    assert stats["slow"]["records"] == stats["slow"]["passed"] == 4 and stats["slow"]["seconds"] >= 0.04
    assert threshold.stats == {"passed": 2, "dropped_x_below_4": 2}  # the stage's own counts stand
