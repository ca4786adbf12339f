"""SyncNet: the StableSyncNet-style model, the syncnet_python S layout, Sync-C/D and offsets,
the trainer (held-out accuracy on the demo corpus, exact resume, Ray Train) and the sync filter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from factory.config import ConfigError
from factory.metrics.sync import offset_distances, shift_audio, sync_scores
from factory.models.syncnet import SyncNet, SyncNetConfig, SyncNetWeightsError, log_mel, mel_window
from factory.models.syncnet_s import SyncNetS, load_syncnet, mfcc

TINY = dict(image_size=32, visual_channels=[8, 16], audio_channels=[8, 16], embed_dim=16, norm_groups=4,
            stem_stride=2)
# the CPU recipe (configs/syncnet_cpu.yaml), fewer held-out windows to keep the test short
RECIPE = ["steps=400", "batch_size=32", "lr=1e-3", "eval_every=100", "log_every=100", "checkpoint_every=200",
          "heldout_windows=128", "model.image_size=48", "model.stem_stride=2", "model.visual_channels=[16,32,64,64]",
          "model.audio_channels=[16,32,64,64]", "model.embed_dim=64", "model.norm_groups=8", "model.loss=scaled_cosine",
          "model.center_frames=true", "all_pairs=true"]


# -- model and weights -------------------------------------------------------------------------

def test_tiny_syncnet_round_trips_through_save_pretrained(tmp_path):
    torch.manual_seed(0)
    model = SyncNet(SyncNetConfig(loss="scaled_cosine", **TINY)).eval()
    cfg = model.config
    visual = torch.randn(2, 3 * cfg.frames, cfg.image_size // 2, cfg.image_size)
    mel = torch.randn(2, 1, cfg.n_mels, cfg.mel_steps)
    assert cfg.mel_steps == 52  # LatentSync's 16 frames <-> 52 mel steps
    p = model(visual, mel)
    assert p.shape == (2,) and ((p > 0) & (p < 1)).all()
    loaded = load_syncnet(model.save_pretrained(tmp_path / "net"), "cpu")
    assert isinstance(loaded, SyncNet) and loaded.config == cfg
    torch.testing.assert_close(loaded(visual, mel), p)


@pytest.mark.parametrize("loss", ["cosine", "scaled_cosine"])
@pytest.mark.parametrize("all_pairs", [False, True])
def test_both_heads_give_a_finite_loss_and_gradients(loss, all_pairs):
    """LatentSync's plain cosine head (probability = cosine of ReLU'd embeddings) and the scaled
    one, each with offset pairs only and with every pair of the batch."""
    from factory.trainers.syncnet import bce

    torch.manual_seed(0)
    model = SyncNet(SyncNetConfig(loss=loss, **TINY))
    cfg = model.config
    visual = torch.randn(3, 3 * cfg.frames, cfg.image_size // 2, cfg.image_size)
    mel = torch.randn(6, 1, cfg.n_mels, cfg.mel_steps)
    labels = torch.tensor([1.0, 1, 1, 0, 0, 0])
    value, p = bce(model, visual, mel, labels, all_pairs)
    value.backward()
    assert torch.isfinite(value) and p.shape == (6,)
    assert model.visual.conv_in.weight.grad.abs().sum() > 0 and model.audio.conv_in.weight.grad.abs().sum() > 0


def test_weights_that_do_not_fit_fail_naming_the_key_and_the_keys(tmp_path):
    with pytest.raises(SyncNetWeightsError, match="ingest.syncnet_path.*does not exist"):
        load_syncnet(tmp_path / "nowhere", "cpu", key="ingest.syncnet_path")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SyncNetWeightsError, match="syncnet_path.*config.json"):
        load_syncnet(tmp_path / "empty", "cpu")
    # a LatentSync-style checkpoint (other module names) is refused with the keys that differ
    torch.save({"state_dict": {"audio_encoder.conv_in.weight": torch.zeros(1)}}, tmp_path / "stable_syncnet.pt")
    with pytest.raises(SyncNetWeightsError, match="missing: netcnnaud.*unexpected: audio_encoder"):
        load_syncnet(tmp_path / "stable_syncnet.pt", "cpu")


def test_syncnet_python_s_layout_loads_and_scores(tmp_path):
    torch.manual_seed(0)
    s = SyncNetS()
    state = s.state_dict()
    # module names and shapes of syncnet_python's SyncNetModel.S (so syncnet_v2.model loads)
    assert state["netcnnaud.0.weight"].shape == (64, 1, 3, 3)
    assert state["netcnnaud.18.weight"].shape == (512, 256, 5, 4)
    assert state["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)
    assert state["netcnnlip.18.weight"].shape == (512, 256, 1, 6, 6)
    assert state["netfcaud.3.weight"].shape == state["netfclip.3.weight"].shape == (1024, 512)
    torch.save(state, tmp_path / "syncnet_v2.model")
    loaded = load_syncnet(tmp_path / "syncnet_v2.model", "cpu")
    assert isinstance(loaded, SyncNetS)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (8, 96, 96, 3), dtype=np.uint8)
    audio = rng.normal(0, 3000, 8 * 640).astype(np.int16)
    scores = sync_scores(loaded, frames, audio, max_offset=2)
    assert len(scores.dists) == 5 and abs(scores.offset) <= 2 and scores.confidence >= 0
    state["netfcaud.3.weight"] = torch.zeros(512, 512)
    torch.save(state, tmp_path / "other.model")
    with pytest.raises(SyncNetWeightsError, match="shape differs: netfcaud.3.weight"):
        load_syncnet(tmp_path / "other.model", "cpu")


def test_audio_features_have_the_published_rates():
    audio = np.zeros(16000, np.int16)
    assert mfcc(audio).shape == (99, 13)  # python_speech_features: 25 ms windows every 10 ms
    cfg = SyncNetConfig()
    mel = log_mel(np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), cfg)
    assert mel.shape == (80, 81) and mel.min() >= -4 and mel.max() <= 4  # 80 steps a second, [-4, 4]
    assert mel_window(mel, 5, cfg).shape == (80, 52)
    assert (mel_window(mel, 24, cfg)[:, -1] == -4).all()  # past the end: silence


# -- Sync-C / Sync-D, offsets --------------------------------------------------------------------

class SignalNet(torch.nn.Module):
    """A stand-in SyncNet whose features are the mouth brightness (video) and loudness (audio) of
    each window: the sync formula must find the shift between them."""

    window = 5

    def video_features(self, frames):
        x = torch.tensor(frames.mean(axis=(1, 2, 3)), dtype=torch.float32)
        return torch.stack([x[i:i + self.window] for i in range(len(x) - self.window + 1)])

    def audio_features(self, audio, sample_rate, count):
        loud = np.abs(audio.astype(np.float32)).reshape(-1, 640).mean(1)
        loud = np.pad(loud, (0, max(0, count + self.window - len(loud))))
        return torch.stack([torch.tensor(loud[i:i + self.window]) for i in range(count)])


def test_sync_scores_recover_a_known_shift_with_syncnet_pythons_sign():
    rng = np.random.default_rng(0)
    signal = rng.uniform(0, 200, 120).astype(np.float32)
    frames = np.repeat(signal[:, None, None, None], 4, 1).repeat(4, 2).repeat(3, 3)
    audio = np.repeat(signal, 640).astype(np.int16)
    assert sync_scores(SignalNet(), frames, audio).offset == 0
    for d in (4, -6):  # audio lagging the lips by d frames: offset -d; shift_audio undoes it
        late = shift_audio(audio, d, 640)
        scores = sync_scores(SignalNet(), frames, late, max_offset=15)
        assert scores.offset == -d and scores.confidence > 0
        assert sync_scores(SignalNet(), frames, shift_audio(late, scores.offset, 640)).offset == 0
    d = offset_distances(torch.zeros(10, 3), torch.zeros(10, 3), 2)
    assert d.shape == (5,) and np.allclose(d, 0)


# -- the filter: reads ingest's numbers, so refilter can re-threshold ---------------------------------

def test_sync_filter_judges_the_recorded_scores():
    from factory.records import Record
    from filters.sync import SyncConfig, SyncFilter

    stage = SyncFilter(SyncConfig())
    out = stage([Record("a", "pair", meta={"sync_conf": 5.0, "av_offset": -2}),
                 Record("b", "pair", meta={"sync_conf": 1.0, "av_offset": 0}),
                 Record("c", "pair", meta={"sync_conf": 6.0, "av_offset": 9}),
                 Record("d", "pair", meta={})])
    assert [r.rejected for r in out] == [None, "sync_conf_below_3", "abs_av_offset_above_6", None]
    assert out[0].meta["scores"]["abs_av_offset"] == 2


def test_missing_syncnet_weights_fail_before_any_work_naming_the_key(tmp_path):
    from pipelines.ingest import run_ingest
    from pipelines.model_paths import missing_model_paths
    from pipelines.settings import load_factory_config

    cfg = load_factory_config(None, [f"out={tmp_path}", f"ingest.syncnet_path={tmp_path}/none"])
    assert any(p.startswith("ingest.syncnet_path") for p in missing_model_paths(cfg))
    with pytest.raises(ConfigError, match="ingest.syncnet_path"):
        run_ingest(cfg, executor=None)


def test_a_config_without_the_gate_keeps_its_clip_store_hash():
    from pipelines.settings import ingest_identity, load_factory_config

    assert "syncnet_path" not in ingest_identity(load_factory_config(None, []))["ingest"]
    assert "syncnet_path" in ingest_identity(load_factory_config(None, ["ingest.syncnet_path=/x"]))["ingest"]


# -- training on the demo corpus (slow) ---------------------------------------------------------------

@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """Six demo sentences (about 80 s, 23 clips of 77 frames) as a clip store: one held out."""
    from tests.syncnet_corpus import demo_clip_store

    return demo_clip_store(tmp_path_factory.mktemp("syncnet_corpus"))


@pytest.fixture(scope="session")
def trained_syncnet(tmp_path_factory, demo_corpus):
    from factory.trainers.syncnet import load_train_config, train

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("syncnet_run")
    cfg = load_train_config(None, [f"out={out}", f"clip_stores=[{demo_corpus.path}]", *RECIPE])
    metrics = train(cfg)
    return out, metrics


@pytest.mark.slow
def test_a_short_cpu_training_tells_synced_from_offset_windows_on_held_out_clips(trained_syncnet):
    out, metrics = trained_syncnet
    print(json.dumps({k: v for k, v in metrics.items() if k != "evals"}, indent=1))
    curve = [c["loss"] for c in metrics["loss_curve"]]
    assert curve[-1] < 0.6 < curve[0] + 0.05  # left ln 2 = 0.693, where small batches can stick
    assert metrics["heldout_accuracy"] >= 0.7  # chance is 0.5 (balanced windows)
    assert (out / "final" / "model.safetensors").is_file() and list((out / "tensorboard").iterdir())
    assert json.loads((out / "metrics.json").read_text())["heldout_accuracy"] == metrics["heldout_accuracy"]


@pytest.mark.slow
def test_the_trained_syncnet_recovers_a_known_audio_shift_and_flags_foreign_audio(trained_syncnet, demo_corpus):
    from factory.clips import load_clip
    from factory.trainers.syncnet import load_train_config, load_corpus

    out, _ = trained_syncnet
    model = load_syncnet(out / "final", "cpu")
    cfg = load_train_config(out / "config.yaml")
    _, held = load_corpus(cfg)
    held_keys = {c.key for c in held}
    clips = {r.key: load_clip(r.meta["clip_path"]) for r in demo_corpus.records() if r.key in held_keys}
    results = {}
    for key, clip in sorted(clips.items()):
        synced = sync_scores(model, clip.frames, clip.audio)
        shifted = {d: sync_scores(model, clip.frames, shift_audio(clip.audio, d, 640)).offset for d in (-5, 3, 6)}
        other = next(c for k, c in sorted(clips.items()) if k != key)
        foreign = sync_scores(model, clip.frames, other.audio)
        results[key] = {"synced": (synced.offset, round(synced.confidence, 2)), "shifted": shifted,
                        "foreign_conf": round(foreign.confidence, 2)}
    print(json.dumps(results, indent=1))
    recovered = [r["shifted"][d] == -d for r in results.values() for d in (-5, 3, 6)]
    assert np.mean(recovered) >= 0.75, results  # shift_audio(d) puts the sound d frames late: offset -d
    assert all(abs(r["synced"][0]) <= 1 for r in results.values()), results
    assert np.median([r["synced"][1] for r in results.values()]) > 1.5 * np.median([r["foreign_conf"] for r in results.values()])


@pytest.mark.slow
def test_a_resumed_training_computes_the_same_losses(tmp_path, demo_corpus):
    from factory.trainers.syncnet import load_train_config, train

    args = [f"clip_stores=[{demo_corpus.path}]", *RECIPE, "steps=6", "eval_every=3", "checkpoint_every=100",
            "max_clips=6", "heldout_windows=8"]
    whole = train(load_train_config(None, [f"out={tmp_path}/whole", *args]))
    first = train(load_train_config(None, [f"out={tmp_path}/cut", *args]), stop_at=3)
    assert first["steps"] == 3 and "weights" not in first
    resumed = train(load_train_config(None, [f"out={tmp_path}/cut", *args]))
    ours = [(e["step"], e["loss"], e["heldout_loss"]) for e in resumed["evals"]]
    assert ours == [(e["step"], e["loss"], e["heldout_loss"]) for e in whole["evals"]]
    a = load_syncnet(tmp_path / "whole" / "final", "cpu").state_dict()
    b = load_syncnet(tmp_path / "cut" / "final", "cpu").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_train_syncnet_runs_under_ray_train(tmp_path, demo_corpus, monkeypatch):
    from factory.cli import main

    import tempfile

    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # its own Ray; short socket paths
    code = main(["train-syncnet", str(Path(__file__).parents[1] / "configs" / "syncnet_cpu.yaml"),
                 f"out={tmp_path}/run", f"clip_stores=[{demo_corpus.path}]", "executor=ray", "steps=4",
                 "eval_every=2", "checkpoint_every=2", "max_clips=4", "heldout_windows=8"])
    assert code == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 4 and (tmp_path / "run" / "final" / "config.json").is_file()
    assert list((tmp_path / "run" / "checkpoints").glob("step-*"))


def test_train_syncnet_config_errors_exit_2(tmp_path):
    from factory.cli import main

    assert main(["train-syncnet", str(tmp_path / "missing.yaml")]) == 2
    assert main(["train-syncnet", str(Path(__file__).parents[1] / "configs" / "syncnet_cpu.yaml"),
                 f"out={tmp_path}", "model.bogus=1"]) == 2


# -- the sync gate at ingest (slow: MediaPipe tracking of two short videos) ------------------------------

def _talking_video(path, text: str, seconds: float, audio_from: str | None = None, late_frames: int = 0):
    """A demo talking video (no sway) whose mouth follows `text`; its soundtrack is `audio_from`'s
    speech instead (a voice-over) and/or arrives `late_frames` after the lips."""
    import cv2

    from factory.demo import MAX_OPEN, astronaut_rig, camera, fit_length, framing, loudness, speak, write_mp4

    audio = fit_length(speak(text), seconds)
    count = len(audio) * 25 // 16000
    rig = astronaut_rig()
    openings = MAX_OPEN * rig.face_height * loudness(audio, count, 25)
    m = camera(framing(rig), 256, 0.0, None)
    frames = [cv2.warpAffine(rig.render(float(o)), m, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
              for o in openings]
    sound = fit_length(speak(audio_from), seconds) if audio_from else audio
    sound = np.concatenate([np.zeros(late_frames * 640, np.float32), sound])[:len(sound)]
    write_mp4(Path(path), frames, sound, 256, 25)
    return path


@pytest.mark.slow
def test_ingest_measures_and_corrects_the_offset_and_flags_a_voice_over(trained_syncnet, tmp_path):
    from factory.clip_store import ClipStore
    from factory.clips import load_clip
    from factory.records import Record
    from factory.stages.ingest import IngestConfig, IngestStage
    from filters.sync import SyncConfig, SyncFilter

    out, _ = trained_syncnet
    text = "Peter piper picked a peck of pickled peppers, a peck indeed, and then he picked some more."
    late = _talking_video(tmp_path / "late.mp4", text, 6.4, late_frames=4)
    voice_over = _talking_video(tmp_path / "voice_over.mp4", text, 6.4,
                                audio_from="How much wood would a woodchuck chuck if a woodchuck could chuck wood?")
    cfg = IngestConfig(identity_frames=0, syncnet_path=str(out / "final"))
    stage = IngestStage(cfg, ClipStore.for_settings(tmp_path / "clips", {"test": 1}))
    records = stage([Record("late", "video", meta={"source": str(late), "speaker": "a"}),
                     Record("vo", "video", meta={"source": str(voice_over), "speaker": "b"})])
    clips = {r.key: r for r in records if r.kind == "clip" and not r.rejected}
    print({k: {m: r.meta.get(m) for m in ("av_offset", "sync_conf", "sync_dist", "av_offset_corrected")} for k, r in clips.items()})
    synced = [r for k, r in clips.items() if k.startswith("late")]
    foreign = [r for k, r in clips.items() if k.startswith("vo")]
    assert synced and foreign
    for r in synced:  # sound 4 frames late: offset -4 (syncnet_python's sign), then shifted into place
        assert r.meta["av_offset"] == -4 and r.meta["av_offset_corrected"] == -4
        model = load_syncnet(out / "final", "cpu")
        assert abs(sync_scores(model, load_clip(r.meta["clip_path"]).frames, load_clip(r.meta["clip_path"]).audio).offset) <= 1
    assert max(r.meta["sync_conf"] for r in foreign) < min(r.meta["sync_conf"] for r in synced)
    threshold = (min(r.meta["sync_conf"] for r in synced) + max(r.meta["sync_conf"] for r in foreign)) / 2
    judged = SyncFilter(SyncConfig(min_sync_conf=threshold))([Record(r.key, "pair", meta=dict(r.meta)) for r in synced + foreign])
    assert [r.rejected is None for r in judged] == [True] * len(synced) + [False] * len(foreign)
