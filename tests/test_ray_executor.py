"""The Ray executor on a real local Ray with two fake GPUs (ENVIRONMENT.md): GPU pinning, a fast
failure when no GPU can ever come, worker deaths retried then recorded, same results and counts as
local, pools sized from free resources, stages torn down when a map ends."""

import os
import time
from pathlib import Path

import pytest
import ray

from factory import cluster
from factory.executors import ExecutorConfig
from factory.executors.local import LocalExecutor
from factory.executors.ray_executor import RayExecutor, ResourceError, fuse
from factory.records import Record
from factory.stage import Filter, Resources, Stage

ROOT = str(Path(__file__).resolve().parent.parent)


class Square(Stage):
    name = "square"

    def process(self, records):
        for r in records:
            r.meta["y"] = r.meta["x"] ** 2
        return records


class WhereAmI(Stage):
    """Reports the GPU Ray gave this actor, the way a model would see it."""

    name = "where"

    def process(self, records):
        for r in records:
            r.meta["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
            r.meta["pid"] = os.getpid()
        return records


class DieOn(Stage):
    """Kills its worker process when it meets x == bad, `times` times (counted in a file)."""

    name = "die_on"

    def __init__(self, bad, times, counter):
        super().__init__(Resources(pool_size=2))
        self.bad, self.times, self.counter = bad, times, counter

    def process(self, records):
        for r in records:
            if r.meta["x"] == self.bad:
                deaths = int(self.counter.read_text()) if self.counter.exists() else 0
                if deaths < self.times:
                    self.counter.write_text(str(deaths + 1))
                    os._exit(1)
        return records


class Diary(Stage):
    """Appends "setup" / "teardown" to a file shared by every worker."""

    name = "diary"

    def __init__(self, path, resources=None):
        super().__init__(resources)
        self.path = path

    def setup(self):
        with open(self.path, "a") as f:
            f.write("setup\n")

    def teardown(self):
        with open(self.path, "a") as f:
            f.write("teardown\n")

    def process(self, records):
        return records


class Even(Filter):
    name = "even"

    def __init__(self, resources=None):
        super().__init__({"odd": ("<", 0.5)}, resources)

    def score(self, record):
        return {"odd": float(record.meta["x"] % 2)}


def recs(n):
    return [Record(f"k{i}", "pair", meta={"x": i}) for i in range(n)]


@pytest.fixture(scope="module")
def fake_gpu_ray():
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
    yield
    ray.shutdown()


def test_same_results_as_local(fake_gpu_ray):
    stage = Square(Resources(batch_size=3, pool_size=2))
    with RayExecutor(ExecutorConfig()) as executor:
        got = sorted((r.key, r.meta["y"]) for r in executor.map([stage], recs(10)))
    want = sorted((r.key, r.meta["y"]) for r in LocalExecutor().map([Square()], recs(10)))
    assert got == want and len(got) == 10


def test_gpu_actors_are_pinned_to_distinct_gpus(fake_gpu_ray):
    stage = WhereAmI(Resources(num_cpus=0.5, num_gpus=1, pool_size=2))
    with RayExecutor(ExecutorConfig()) as executor:
        out = list(executor.map([stage], recs(16)))
    by_pid = {}
    for r in out:
        by_pid.setdefault(r.meta["pid"], set()).add(r.meta["cuda_visible_devices"])
    assert len(by_pid) == 2  # two actors...
    assert sorted(v.pop() for v in by_pid.values()) == ["0", "1"]  # ...each on its own GPU


def test_fractional_gpus_share_one_device(fake_gpu_ray):
    stage = WhereAmI(Resources(num_cpus=0.5, num_gpus=0.5, pool_size=2))
    with RayExecutor(ExecutorConfig()) as executor:
        out = list(executor.map([stage], recs(8)))
    assert len({r.meta["cuda_visible_devices"] for r in out}) >= 1 and len(out) == 8


def test_one_actor_pool_serves_every_phase(fake_gpu_ray):
    with RayExecutor(ExecutorConfig()) as executor:
        first = {r.meta["pid"] for r in executor.map([WhereAmI(Resources(pool_size=2))], recs(6))}
        second = {r.meta["pid"] for r in executor.map([WhereAmI(Resources(pool_size=2))], recs(6))}
    assert first == second and len(first) == 2  # the same two processes: imports paid once


def test_stages_with_equal_resources_fuse_into_one_actor():
    a, b = Square(Resources(pool_size=2)), Square(Resources(pool_size=3))
    g = WhereAmI(Resources(num_gpus=1))
    segments = fuse([a, b, g])
    assert [len(s.stages) for s in segments] == [2, 1] and segments[0].pool_size == 3


def test_pools_shrink_to_the_budget_and_a_shared_pool_counts_once():
    cpu_a, gpu, cpu_b = fuse([Square(Resources(pool_size=2)), WhereAmI(Resources(num_gpus=1)),
                              Square(Resources(pool_size=2))])
    assert RayExecutor._pool_sizes([cpu_a, gpu, cpu_b], {"CPU": 3, "GPU": 1}) == [2, 1, 2]  # 2 + 1 actors
    assert RayExecutor._pool_sizes([cpu_a], {"CPU": 1, "GPU": 0}) == [1]
    assert RayExecutor._pool_sizes([cpu_a], {"CPU": 0, "GPU": 0}) == [1]  # waits for a CPU rather than none


def test_worker_death_is_retried(fake_gpu_ray, tmp_path):
    stage = DieOn(bad=3, times=1, counter=tmp_path / "deaths")
    with RayExecutor(ExecutorConfig(max_retries=2)) as executor:
        out = list(executor.map([stage], recs(6)))
    assert sorted(r.key for r in out) == [f"k{i}" for i in range(6)]
    assert not any(r.rejected for r in out)


def test_worker_that_keeps_dying_is_recorded_not_fatal(fake_gpu_ray, tmp_path):
    stage = DieOn(bad=3, times=99, counter=tmp_path / "deaths")
    with RayExecutor(ExecutorConfig(max_retries=1)) as executor:
        out = {r.key: r for r in executor.map([stage], recs(6))}
    assert len(out) == 6 and executor.failures == 1
    assert out["k3"].rejected.startswith("worker_failed:") and not out["k2"].rejected


def test_gpu_stage_without_gpus_fails_fast_with_a_clear_message():
    code = (
        "import ray, sys\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "from factory.executors import ExecutorConfig\n"
        "from factory.executors.ray_executor import RayExecutor, ResourceError\n"
        "from tests.test_ray_executor import WhereAmI, recs\n"
        "from factory.stage import Resources\n"
        "ray.init(num_cpus=1, num_gpus=0, include_dashboard=False)\n"
        "try:\n"
        "    list(RayExecutor(ExecutorConfig(gpu_wait_s=0)).map([WhereAmI(Resources(num_gpus=1))], recs(1)))\n"
        "except ResourceError as e:\n"
        "    print('RESOURCE_ERROR', e)\n"
    )
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "RESOURCE_ERROR" in result.stdout, result.stderr[-2000:]
    assert "generate.resources.num_gpus=0" in result.stdout and "0 GPUs" in result.stdout
    assert ResourceError.__doc__


def test_pool_is_sized_from_free_cpus_next_to_another_job(fake_gpu_ray):
    other_job = ray.remote(num_cpus=1)(Diary).remote("/dev/null")  # any actor holding one of the two CPUs
    ray.get(other_job.report.remote())
    try:
        deadline = time.monotonic() + 30
        while cluster.available()["CPU"] != 1 and time.monotonic() < deadline:  # actors of earlier tests go
            time.sleep(0.2)
        assert cluster.available()["CPU"] == 1
        with RayExecutor(ExecutorConfig()) as executor:
            out = list(executor.map([WhereAmI(Resources(pool_size=2))], recs(6)))
            assert len(executor._pools[(1.0, 0.0)]) == 1
        assert len(out) == 6 and len({r.meta["pid"] for r in out}) == 1
    finally:
        ray.kill(other_job)
        assert cluster.wait_until_available({"CPU": 2})  # the next test gets both CPUs


def test_a_finished_or_abandoned_map_tears_down_its_stages_on_every_actor(fake_gpu_ray, tmp_path):
    diary = tmp_path / "diary"
    with RayExecutor(ExecutorConfig()) as executor:
        assert len(list(executor.map([Diary(diary, Resources(pool_size=2))], recs(8)))) == 8
        actors = executor._pools[(1.0, 0.0)]
        assert [ray.get(a.held.remote()) for a in actors] == [[]] * len(actors)
        lines = diary.read_text().split()
        assert lines.count("setup") == lines.count("teardown") >= 1

        stream = executor.map([Diary(diary, Resources(pool_size=2))], recs(8))
        next(stream)
        assert any(ray.get(a.held.remote()) for a in actors)  # the map's stages, while it runs
        stream.close()
        assert [ray.get(a.held.remote()) for a in actors] == [[]] * len(actors)
        lines = diary.read_text().split()
        assert lines.count("setup") == lines.count("teardown") >= 2


def without_seconds(stats):
    return {name: {k: v for k, v in counts.items() if k != "seconds"} for name, counts in stats.items()}


def test_both_executors_report_the_same_stage_counts(fake_gpu_ray):
    def stages():
        return [Square(Resources(batch_size=2, pool_size=2)), Even(Resources(batch_size=3, pool_size=2))]

    local = LocalExecutor()
    with RayExecutor(ExecutorConfig()) as executor:
        for n in (9, 4):  # summed over maps
            list(executor.map(stages(), recs(n)))
            list(local.map(stages(), recs(n)))
        stats = executor.stage_stats()
    assert without_seconds(stats) == without_seconds(local.stage_stats()) == {
        "square": {"records": 13, "passed": 13},
        "even": {"records": 13, "passed": 7, "dropped_odd_above_0.5": 6},
    }
    assert all(counts["seconds"] >= 0 for counts in stats.values())
