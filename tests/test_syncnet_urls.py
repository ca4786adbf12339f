"""`factory train-syncnet` on object storage (issue 15: trainers checkpoint to URLs): a run that
reads its clip store from memory:// and writes everything to memory:// (config.yaml, checkpoints
in the shared loop's layout, TensorBoard events, metrics.json, final/), stopped after 3 steps and
resumed through the CLI, ends with the same losses and weights as an uninterrupted local run; and
nothing lands in a local folder named `memory:`."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch

from factory import storage
from factory.models.syncnet import SyncNet
from factory.models.syncnet_s import load_syncnet
from tests.test_syncnet import RECIPE, TINY

SHORT = ["steps=6", "eval_every=3", "checkpoint_every=100", "max_clips=6", "heldout_windows=8", "batch_size=8"]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def bucket():
    url = f"memory://syncnet-{uuid.uuid4().hex[:8]}"
    yield url
    storage.remove(url)  # memory:// lives as long as the process: leave nothing for other tests


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """Two demo sentences (8 clips of 77 frames) as a local clip store: one video held out."""
    from factory.demo import SENTENCES
    from tests.syncnet_corpus import demo_clip_store

    return demo_clip_store(tmp_path_factory.mktemp("syncnet_corpus"), sentences=SENTENCES[:2])


def test_train_syncnet_on_memory_urls_resumes_to_the_uninterrupted_runs_weights(small_corpus, bucket, tmp_path,
                                                                              monkeypatch, caplog):
    from factory.cli import main
    from factory.trainers.syncnet import load_train_config, train

    store = storage.join(bucket, "clips", small_corpus.id)
    assert storage.upload_tree(small_corpus.path, store) > 8
    out = storage.join(bucket, "syncnet")
    monkeypatch.chdir(tmp_path)  # a URL taken for a path would show up here as a `memory:` folder
    whole = train(load_train_config(None, [f"out={tmp_path}/whole", f"clip_stores=[{small_corpus.path}]", *RECIPE, *SHORT]))

    on_urls = [f"out={out}", f"clip_stores=[{store}]", *RECIPE, *SHORT]
    first = train(load_train_config(None, on_urls), stop_at=3)
    assert first["steps"] == 3 and "weights" not in first
    cut = storage.join(out, "checkpoints", "step-00000003")
    assert {storage.name(p) for p in storage.ls(cut)} == {"model.safetensors", "trainer.pt"}
    assert not storage.exists(storage.join(out, "final"))
    assert json.loads(storage.read_text(storage.join(out, "metrics.json")))["steps"] == 3

    config = str(Path(__file__).parents[1] / "configs" / "syncnet_cpu.yaml")
    with caplog.at_level("INFO", logger="factory.trainers.syncnet"):
        assert main(["train-syncnet", config, *on_urls]) == 0
    assert f"resuming {out} from step 3" in caplog.text  # from the checkpoint on the URL, not from scratch
    resumed = json.loads(storage.read_text(storage.join(out, "metrics.json")))
    assert [(e["step"], e["loss"], e["heldout_loss"]) for e in resumed["evals"]] == \
        [(e["step"], e["loss"], e["heldout_loss"]) for e in whole["evals"]]
    assert resumed["weights"] == storage.join(out, "final") and resumed["steps"] == 6
    assert [storage.name(p) for p in storage.ls(storage.join(out, "checkpoints"))] == ["step-00000003", "step-00000006"]
    assert "memory://" in storage.read_text(storage.join(out, "config.yaml"))
    events = storage.ls(storage.join(out, "tensorboard"))
    assert len(events) == 2 and all(b"heldout_loss" in storage.read_bytes(e) for e in events)  # both sessions'

    # final/ is a save_pretrained folder of objects; copied down, load_syncnet reads it as before
    final = storage.join(out, "final")
    assert {storage.name(p) for p in storage.ls(final)} == {"config.json", "model.safetensors"}
    local_final = tmp_path / "downloaded"
    for obj in storage.ls(final):
        local_final.mkdir(exist_ok=True)
        (local_final / storage.name(obj)).write_bytes(storage.read_bytes(obj))
    a = load_syncnet(tmp_path / "whole" / "final", "cpu").state_dict()
    b = load_syncnet(local_final, "cpu").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloaded", "whole"]  # no `memory:` folder


def test_a_checkpoint_of_the_earlier_layout_still_resumes(tmp_path):
    """Before the shared layout, a SyncNet checkpoint held its weights in a save_pretrained model/
    folder beside trainer.pt: such a run still resumes."""
    from factory.trainers.syncnet import SyncNetTrainConfig, latest_checkpoint, load_checkpoint, save_checkpoint
    from factory.config import to_dict
    from factory.models.syncnet import SyncNetConfig

    torch.manual_seed(0)
    cfg = SyncNetTrainConfig(out=str(tmp_path / "run"), model=SyncNetConfig(**TINY))
    model = SyncNet(cfg.model)
    opt = torch.optim.AdamW(model.parameters())
    old = tmp_path / "run" / "checkpoints" / "step-00000005"
    model.save_pretrained(old / "model")
    torch.save({"step": 5, "optimizer": opt.state_dict(), "history": [{"step": 5, "loss": 0.5}],
                "config": to_dict(cfg)}, old / "trainer.pt")
    assert latest_checkpoint(cfg.out) == str(old)
    fresh = SyncNet(cfg.model)
    assert load_checkpoint(latest_checkpoint(cfg.out), fresh, torch.optim.AdamW(fresh.parameters()), cfg) == \
        (5, [{"step": 5, "loss": 0.5}])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    # the next checkpoint is in the shared layout, and the older is kept (keep_checkpoints=2)
    new = save_checkpoint(cfg.out, 6, fresh, torch.optim.AdamW(fresh.parameters()), [], cfg)
    assert (Path(new) / "model.safetensors").is_file() and latest_checkpoint(cfg.out) == new and old.is_dir()


def test_ray_train_with_a_url_out_is_refused_before_anything_is_made(tmp_path, monkeypatch, capsys):
    """Until factory/trainers/ray_train.py keeps a URL for Ray's run folder (it resolves it as a
    local Path), executor=ray with a URL `out` exits 2 naming the key, and makes no `memory:` folder."""
    from factory.cli import main

    monkeypatch.chdir(tmp_path)
    config = str(Path(__file__).parents[1] / "configs" / "syncnet_cpu.yaml")
    assert main(["train-syncnet", config, "executor=ray", "out=memory://nowhere/syncnet"]) == 2
    err = capsys.readouterr().err
    assert "executor=ray" in err and "out=memory://nowhere/syncnet" in err
    assert list(tmp_path.iterdir()) == []
