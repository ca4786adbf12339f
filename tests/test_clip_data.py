"""The generators' clip dataset (factory/trainers/clip_data.py) on a small demo clip store:
the batch contract, the split by video, motion and reference frames taken from the clip file,
masks over the mouth, and an order that resumes exactly and splits across ranks and workers."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from factory.config import ConfigError
from factory.faces.landmarks import MOUTH
from factory.trainers.clip_data import ClipDataConfig, ClipDataset, collate, data_loader

CROP = 96  # clips are stored larger than the 64 px the tests train at


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three demo videos, 77-frame clips at 96 px (two segments each), with the photo's real
    landmarks mapped into the crop (the corpus builder stores none)."""
    from factory.demo import SENTENCES
    from tests.syncnet_corpus import demo_clip_store_with_landmarks

    return demo_clip_store_with_landmarks(tmp_path_factory.mktemp("clip_data"), sentences=SENTENCES[:3], crop=CROP)


def config(store, **kw) -> ClipDataConfig:
    return ClipDataConfig(clip_stores=[str(store.path)], **{"resolution": 64, "heldout_share": 0.34, **kw})


def keys(dataset) -> list[str]:
    return [dataset.samples[i].clip * 1000 + dataset.samples[i].start for _, _, i in dataset.positions()]


def test_a_batch_follows_the_contract(store):
    ds = ClipDataset(config(store), batch_size=2)
    batch = collate([ds.load(0), ds.load(1)])
    shapes = {k: tuple(v.shape) for k, v in batch.items() if torch.is_tensor(v)}
    assert shapes == {"target": (2, 3, 25, 64, 64), "motion": (2, 3, 5, 64, 64), "references": (2, 3, 4, 64, 64),
                      "face_mask": (2, 1, 25, 64, 64), "lip_mask": (2, 1, 25, 64, 64),
                      "mouth_landmarks": (2, 25, len(MOUTH), 2), "audio": (2, 25 * 640)}
    for name in ("target", "motion", "references", "audio"):
        assert batch[name].dtype == torch.float32 and batch[name].min() >= -1 and batch[name].max() <= 1
    for name in ("face_mask", "lip_mask"):
        assert set(batch[name].unique().tolist()) == {0.0, 1.0}
    assert 0 <= batch["mouth_landmarks"].min() and batch["mouth_landmarks"].max() <= 1
    assert batch["key"] == [f"{ds.clips[ds.samples[i].clip].key}@{ds.samples[i].start:05d}" for i in (0, 1)]
    assert batch["target"].std() > 0.1  # a face, not a blank


def test_the_heldout_split_shares_no_video_with_training(store):
    train, held = ClipDataset(config(store)), ClipDataset(config(store), "heldout")
    train_videos, held_videos = {c.video_key for c in train.clips}, {c.video_key for c in held.clips}
    assert held_videos and train_videos and not train_videos & held_videos
    assert len(train.clips) + len(held.clips) == len(store.records())


def test_motion_frames_are_the_real_frames_before_the_segment_and_audio_is_the_segments(store):
    from factory.clips import load_clip

    ds = ClipDataset(config(store, resolution=CROP))  # no resize: pixels compare exactly
    for index in (0, 1, len(ds.samples) - 1):
        s = ds.samples[index]
        clip = load_clip(ds.clips[s.clip].path)
        got = ds.load(index)
        assert s.start >= 5
        want = torch.from_numpy(clip.frames[s.start - 5:s.start]).permute(3, 0, 1, 2).float() / 127.5 - 1
        assert torch.equal(got["motion"], want)
        target = torch.from_numpy(clip.frames[s.start:s.start + 25]).permute(3, 0, 1, 2).float() / 127.5 - 1
        assert torch.equal(got["target"], target)
        audio = clip.audio[s.start * 640:(s.start + 25) * 640].astype(np.float32) / 32768
        assert np.array_equal(got["audio"].numpy(), audio)


def test_references_are_frames_of_the_same_video_outside_the_segment(store):
    from factory.clips import load_clip

    ds = ClipDataset(config(store, resolution=CROP))
    for index in range(0, len(ds.samples), 5):
        s = ds.samples[index]
        picks = ds.reference_indices(index, epoch=0)
        got = ds.load(index)["references"]
        assert len(picks) == 4
        for n, (ci, f) in enumerate(picks):
            assert ds.clips[ci].video_key == ds.clips[s.clip].video_key
            assert ci != s.clip or not s.start - 5 <= f < s.start + 25
            frame = torch.from_numpy(load_clip(ds.clips[ci].path).frames[f]).permute(2, 0, 1).float() / 127.5 - 1
            assert torch.equal(got[:, n], frame)
    assert ds.reference_indices(3, epoch=0) != ds.reference_indices(3, epoch=1)  # fresh references each epoch


def test_clip_files_read_memory_mapped_equal_load_clip_compressed_or_not(store, tmp_path):
    from factory.clips import load_clip
    from factory.trainers.clip_data import open_clip

    path = store.records()[0].meta["clip_path"]
    clip = load_clip(path)
    np.savez_compressed(tmp_path / "c.npz", frames=clip.frames, landmarks=clip.landmarks,
                        transforms=clip.transforms, audio=clip.audio)
    for opened in (open_clip(path), open_clip(str(tmp_path / "c.npz"))):
        for name in ("frames", "landmarks", "transforms", "audio"):
            assert np.array_equal(getattr(opened, name), getattr(clip, name)), name
    assert isinstance(open_clip(path).frames, np.memmap)


def test_short_clips_take_references_from_the_videos_other_clips(tmp_path):
    from factory.demo import SENTENCES
    from tests.syncnet_corpus import demo_clip_store

    short = demo_clip_store(tmp_path, sentences=SENTENCES[:1], crop=64, clip_frames=31)  # 1 frame outside
    ds = ClipDataset(ClipDataConfig(clip_stores=[str(short.path)], resolution=64, heldout_share=0))
    picks = ds.reference_indices(0, epoch=0)
    assert {ci for ci, _ in picks} - {ds.samples[0].clip}
    assert ds.load(0)["references"].shape == (3, 4, 64, 64)


def test_masks_cover_the_mouth_landmarks(store):
    ds = ClipDataset(config(store))
    sample = ds.load(2)
    points = np.round(sample["mouth_landmarks"].numpy() * 64).astype(int).clip(0, 63)  # (T, K, 2)
    t = np.arange(25)[:, None]
    for name in ("face_mask", "lip_mask"):
        mask = sample[name][0].numpy()
        assert mask[t, points[..., 1], points[..., 0]].all(), name
    assert sample["lip_mask"].sum() < sample["face_mask"].sum() < 0.5 * sample["face_mask"].numel()


def test_resuming_at_a_position_gives_the_uninterrupted_sequence(store):
    whole = ClipDataset(config(store), epochs=3)
    stream = list(whole.positions())
    assert [p for p, _, _ in stream] == list(range(3 * whole.samples_per_epoch))
    order = [i for _, _, i in stream]
    assert order[:whole.samples_per_epoch] != order[whole.samples_per_epoch:2 * whole.samples_per_epoch]  # reshuffled
    for k in (0, 5, whole.samples_per_epoch, whole.samples_per_epoch + 3):
        resumed = ClipDataset(config(store), epochs=3)
        resumed.load_state_dict({"position": k, "samples": whole.fingerprint()})
        assert [i for _, _, i in resumed.positions()] == order[k:]
    # iterating real samples: stop after 3, resume from the saved state
    first = ClipDataset(config(store), epochs=1)
    it = iter(first)
    head = [next(it)["key"] for _ in range(3)]
    again = ClipDataset(config(store), epochs=1)
    again.load_state_dict(first.state_dict())
    tail = [s["key"] for s in again]
    assert head + tail == [s["key"] for s in ClipDataset(config(store), epochs=1)]


def test_a_changed_dataset_refuses_an_old_position(store):
    ds = ClipDataset(config(store))
    with pytest.raises(ValueError, match="cannot resume"):
        ds.load_state_dict({"position": 3, "samples": "other"})


def test_two_ranks_see_disjoint_samples_covering_the_set(store):
    ranks = [ClipDataset(config(store), rank=r, world_size=2) for r in (0, 1)]
    seen = [[i for _, _, i in ds.positions()] for ds in ranks]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(len(ranks[0].samples)))
    assert abs(len(seen[0]) - len(seen[1])) <= 1


def test_loader_workers_give_the_same_batches_as_one_process(store):
    cfg = config(store, segment_stride=12)
    one = [b["key"] for b in data_loader(ClipDataset(cfg, batch_size=3))]
    two = [b["key"] for b in data_loader(ClipDataset(cfg, batch_size=3), num_workers=2)]
    assert one == two and len(one) >= 4
    positions = [p for b in data_loader(ClipDataset(cfg, batch_size=3), num_workers=2) for p in b["position"].tolist()]
    assert positions == list(range(len(positions)))


def test_audio_features_come_with_an_audio_encoder(store):
    from factory.models.audio_features import AudioFeatureConfig, AudioFeatures

    encoder = AudioFeatures(AudioFeatureConfig(tiny={}, window=8, device="cpu"))
    ds = ClipDataset(config(store), audio_encoder=encoder)
    sample = ds.load(1)
    assert sample["audio_features"].shape == (25, 8, encoder.dim)
    # the segment's windows, cut from features of the audio around it (not of the segment alone)
    s = ds.samples[1]
    from factory.clips import load_clip

    pcm = load_clip(ds.clips[s.clip].path).audio
    lo = s.start - 2
    around = torch.from_numpy(pcm[lo * 640:(s.start + 27) * 640].astype(np.float32) / 32768)[None]
    assert torch.allclose(sample["audio_features"], encoder(around)[0, 2:27], atol=1e-5)


def test_bad_settings_name_their_key(store, tmp_path):
    with pytest.raises(ConfigError, match="segment_frames"):
        ClipDataset(config(store, segment_frames=24))
    with pytest.raises(ConfigError, match="clip_stores"):
        ClipDataset(ClipDataConfig())
