"""Training on object storage (issue 15, the reading side): the pair loader reads a finished run
copied to a local S3 (moto's server, tests/s3_server.py) exactly as it reads it from disk and
refuses a damaged object; the shared loop checkpoints to s3:// and memory:// and a resumed run
equals an uninterrupted one bit for bit (4 steps == 2 + resume + 2)."""

from __future__ import annotations

import io
import json
import uuid

import pytest
import torch
from safetensors.torch import load as load_safetensors

from factory import storage
from factory.trainers.checkpoints import load_trainer_state
from factory.trainers.loop import run_training, train
from factory.trainers.pair_data import PairDataConfig, PairDataset, pair_loader
from manifests.reader import DamagedShard, iter_pairs
from tests.test_train_loop import assert_same_tensors, recipe


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def upload_run(run, url: str, table: bool = True) -> str:
    """What training reads of a finished run (manifest, table, shards) copied to `url`."""
    storage.upload(run / "manifest.json", storage.join(url, "manifest.json"))
    if table:
        storage.upload(run / "samples.parquet", storage.join(url, "samples.parquet"))
    storage.upload_tree(run / "shards", storage.join(url, "shards"))
    return url


def config(run, **kw) -> PairDataConfig:
    return PairDataConfig(manifests=[str(run)], **{"resolution": 32, "segment_frames": 9, "heldout_share": 0.5,
                                                   "shuffle_buffer": 8, "reference_frames": 2, **kw})


def samples(dataset: PairDataset, n: int) -> list[dict]:
    out = []
    for sample in dataset:
        out.append(sample)
        if len(out) == n:
            break
    return out


def assert_same_samples(a: list[dict], b: list[dict]) -> None:
    assert [s["key"] for s in a] == [s["key"] for s in b] and len(a) > 0
    for x, y in zip(a, b):
        for name, value in x.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, y[name]), name


def test_the_pair_loader_reads_a_run_on_s3_as_from_disk(finished_run, s3_bucket):
    url = upload_run(finished_run, s3_bucket + "/run")
    on_disk, on_s3 = PairDataset(config(finished_run)), PairDataset(config(url))
    assert on_s3.rows and on_disk.fingerprint() == on_s3.fingerprint()  # the order is the pairs', not the place's
    reference = samples(on_disk, 6)
    assert_same_samples(reference, samples(on_s3, 6))
    resumed = PairDataset(config(url))
    resumed.start_at(4)  # the stream replayed from S3 bytes up to position 4
    assert_same_samples(reference[4:], samples(resumed, 2))
    assert_same_samples(samples(PairDataset(config(finished_run), "heldout"), 3),
                        samples(PairDataset(config(url), "heldout"), 3))
    keys = [s["__key__"] for s in iter_pairs(finished_run / "manifest.json", decode=False)]
    assert [s["__key__"] for s in iter_pairs(url + "/manifest.json", decode=False)] == keys


def test_loader_workers_stream_from_s3_the_batches_one_process_reads_from_disk(finished_run, s3_bucket):
    url = upload_run(finished_run, s3_bucket + "/run")  # workers are forked after s3fs is in use here

    def keys(where: str, workers: int) -> list[str]:
        batches = iter(pair_loader(PairDataset(config(where, heldout_share=0.0), batch_size=2), num_workers=workers))
        return [k for _ in range(3) for k in next(batches)["key"]]

    assert keys(url, 2) == keys(str(finished_run), 0)


def test_without_a_table_the_index_comes_from_the_shards_on_storage(finished_run):
    url = upload_run(finished_run, f"memory://runs-{uuid.uuid4().hex[:8]}/run", table=False)
    with_table, without = PairDataset(config(finished_run)), PairDataset(config(url))
    assert [(r.key, r.frames, r.video_key) for r in with_table.rows] == [(r.key, r.frames, r.video_key)
                                                                          for r in without.rows]


def test_a_damaged_object_on_s3_is_refused(finished_run, s3_bucket):
    url = upload_run(finished_run, s3_bucket + "/run")
    shard = json.loads(storage.read_text(url + "/manifest.json"))["shardlist"][1]["url"]
    data = bytearray(storage.read_bytes(storage.join(url, shard)))
    data[len(data) // 2] ^= 0xFF  # one bit flip, same size
    storage.put_bytes(storage.join(url, shard), bytes(data))
    with pytest.raises(DamagedShard, match=shard.rsplit("/", 1)[-1]):
        PairDataset(config(url))


def checkpoint_at(out: str, step: int):
    path = storage.join(out, "checkpoints", f"step-{step:08d}")
    return load_safetensors(storage.read_bytes(storage.join(path, "model.safetensors"))), load_trainer_state(path)


@pytest.mark.parametrize("where", ["memory", "s3"])
def test_a_run_checkpointing_to_a_url_resumes_exactly(tmp_path, monkeypatch, request, where):
    monkeypatch.chdir(tmp_path)  # a URL taken for a path would show up here as a folder `memory:` / `s3:`
    base = f"memory://train-{uuid.uuid4().hex[:8]}" if where == "memory" else request.getfixturevalue("s3_bucket")
    settings = dict(dropout=0.5, ema_decay=0.9, grad_accum=2, warmup=2, schedule="cosine", checkpoint_every=1,
                    keep_checkpoints=1)
    whole = train(recipe(tmp_path / "whole", **settings))  # the reference: on local disk, never stopped
    out = base + "/cut"
    first = train(recipe(out, **settings), stop_at=2)
    assert first["steps"] == 2 and "weights" not in first
    resumed = train(recipe(out, **settings))
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whole"]

    weights_a, state_a = checkpoint_at(str(tmp_path / "whole"), 4)
    weights_b, state_b = checkpoint_at(out, 4)
    assert_same_tensors(weights_a, weights_b)
    for key in ("ema", "optimizer", "scheduler", "step", "history"):
        assert_same_tensors(state_a[key], state_b[key])
    assert whole["evals"] == resumed["evals"]
    final = storage.join(out, "final")
    assert_same_tensors(load_safetensors((tmp_path / "whole" / "final" / "model.safetensors").read_bytes()),
                        load_safetensors(storage.read_bytes(storage.join(final, "model.safetensors"))))
    assert resumed["weights"] == final and storage.isfile(storage.join(final, "config.json"))
    # what else the run leaves: the newest checkpoint only (keep 1), metrics, config, TensorBoard of both sessions
    assert [storage.name(p) for p in storage.ls(storage.join(out, "checkpoints"))] == ["step-00000004"]
    assert json.loads(storage.read_text(storage.join(out, "metrics.json")))["resumed_from"] == 2
    assert "lr: 0.01" in storage.read_text(storage.join(out, "config.yaml"))
    events = storage.ls(storage.join(out, "tensorboard"))
    assert len(events) == 2 and all(b"train/loss" in storage.read_bytes(e) for e in events)
    assert torch.load(io.BytesIO(storage.read_bytes(storage.join(out, "checkpoints", "step-00000004", "trainer.pt"))),
                      weights_only=False)["step"] == 4


@pytest.mark.slow
def test_ray_train_two_ranks_checkpoint_to_s3_and_resume(s3_bucket):
    from factory import cluster

    out = s3_bucket + "/run"
    started = cluster.connect(num_cpus=2)  # started here, so its workers inherit the test's AWS variables
    try:
        settings = dict(executor="ray", num_workers=2, grad_accum=2, checkpoint_every=1, ema_decay=0.9)
        first = run_training(recipe(out, steps=2, **settings))
        assert first["steps"] == 2 and storage.isfile(storage.join(out, "final", "model.safetensors"))
        resumed = run_training(recipe(out, steps=4, **settings))
    finally:
        cluster.disconnect(started)
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 4
    state = load_trainer_state(storage.join(out, "checkpoints", "step-00000004"))
    assert state["step"] == 4 and [r["data"]["source"]["position"] for r in state["ranks"]] == [8, 8]
    assert storage.isdir(storage.join(out, "ray"))  # Ray Train's own run state on the bucket too
