from factory.records import Record
from factory.stage import Filter, Stage


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
