"""The dubbers' pair dataset (factory/trainers/pair_data.py) on the session's finished demo run
(tests.conftest.finished_run: 8 pairs of 25 frames from two videos, in 3 shards): the batch
contract, exact backgrounds, motion frames, the held-out split by video, rank and worker splits
(more and fewer shards than ranks), score thresholds, weighted mixing and exact resume."""

from __future__ import annotations

import json
import logging
import shutil

import cv2
import numpy as np
import pytest
import torch

from factory.config import ConfigError, build
from factory.faces.landmarks import MOUTH
from factory.trainers.pair_data import PairDataConfig, PairDataset, index_manifest, pair_loader
from manifests.reader import iter_pairs

T = 9  # segment frames: two segments (starts 0 and 9) in each 25-frame pair


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pairs(finished_run):
    """Every pair of the run decoded as made (key -> reader dict), the reference the tests compare with."""
    return {p["key"]: p for p in iter_pairs(finished_run / "manifest.json")}


def config(run, **kw) -> PairDataConfig:
    return PairDataConfig(manifests=[str(run)], **{"resolution": 64, "segment_frames": T, "heldout_share": 0.5,
                                                   "shuffle_buffer": 8, **kw})


def raw_keys(dataset, n: int | None = None) -> list[tuple[int, int, str, int]]:
    """(position, source, pair key, segment start) of the first n raw stream items (nothing decoded)."""
    out = []
    for position, _, raw, start, source in dataset.raw_stream():
        if n is not None and len(out) == n:
            break
        out.append((position, source, raw["__key__"], start))
    return out


def frames(video: torch.Tensor) -> np.ndarray:
    """(3, F, S, S) in [-1, 1] -> (F, S, S, 3) uint8 as stored."""
    return ((video.permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().astype(np.uint8)


def test_a_batch_follows_the_contract(finished_run):
    ds = PairDataset(config(finished_run), batch_size=2)
    batch = next(iter(pair_loader(ds)))
    shapes = {k: tuple(v.shape) for k, v in batch.items() if torch.is_tensor(v)}
    video, mask = (2, 3, T, 64, 64), (2, 1, T, 64, 64)
    assert shapes == {"target": video, "synthetic": video, "motion": (2, 3, 5, 64, 64),
                      "references": (2, 3, 4, 64, 64), "face_mask": mask, "lip_mask": mask, "syn_lip_mask": mask,
                      "alpha": mask, "mouth_landmarks": (2, T, len(MOUTH), 2),
                      "syn_mouth_landmarks": (2, T, len(MOUTH), 2),
                      "audio": (2, T * 640), "alt_audio": (2, T * 640), "motion_valid": (2,), "position": (2,)}
    for name in ("target", "synthetic", "motion", "references", "audio", "alt_audio"):
        assert batch[name].dtype == torch.float32 and -1 <= batch[name].min() and batch[name].max() <= 1
    for name in ("face_mask", "lip_mask", "syn_lip_mask"):
        assert set(batch[name].unique().tolist()) == {0.0, 1.0}
    assert 0 <= batch["alpha"].min() and batch["alpha"].max() <= 1 and batch["alpha"].max() > 0.9
    for name in ("mouth_landmarks", "syn_mouth_landmarks"):
        assert 0 <= batch[name].min() and batch[name].max() <= 1
    assert batch["motion_valid"].dtype == torch.bool and batch["position"].tolist() == [0, 1]
    assert all(k.split("@")[0] in {r.key for r in ds.rows} for k in batch["key"])
    assert batch["target"].std() > 0.1  # a face, not a blank
    # the synthetic lips are another clip's: the two sides differ inside the alpha
    assert (batch["synthetic"] - batch["target"]).abs().amax() > 0.2


@pytest.mark.parametrize("resolution", [256, 64])
def test_synthetic_equals_target_outside_the_alpha_exactly(finished_run, resolution):
    ds = PairDataset(config(finished_run, resolution=resolution, heldout_share=0.0), epochs=1)
    checked = 0
    for sample in ds:
        outside = (sample["alpha"] == 0).expand_as(sample["target"])
        assert outside.float().mean() > 0.5
        assert torch.equal(sample["synthetic"][outside], sample["target"][outside])
        assert not torch.equal(sample["synthetic"], sample["target"])
        checked += 1
    assert checked == 16  # every segment of every pair


def test_segments_are_the_real_clip_its_audio_and_the_synthetic_sides_audio(finished_run, pairs):
    ds = PairDataset(config(finished_run, resolution=256, heldout_share=0.0), epochs=1)
    for sample in ds:
        key, start = sample["key"].split("@")
        pair, start = pairs[key], int(start)
        assert np.array_equal(frames(sample["target"]), pair["real"][start:start + T])
        assert np.array_equal(frames(sample["synthetic"]), pair["syn"][start:start + T])
        assert np.allclose(sample["alpha"][0].numpy() * 255, pair["alpha"][start:start + T], atol=1e-3)
        lo, hi = start * 640, (start + T) * 640
        assert np.array_equal(sample["audio"].numpy(), pair["real_audio"][lo:hi] / np.float32(32768))
        assert np.array_equal(sample["alt_audio"].numpy(), pair["alt_audio"][lo:hi] / np.float32(32768))
        want = np.clip(pair["real_landmarks"][start:start + T, MOUTH] / 256, 0, 1)
        assert np.allclose(sample["mouth_landmarks"].numpy(), want)


def test_motion_frames_come_from_the_clip_then_the_stored_crops_else_zeros(finished_run, pairs):
    ds = PairDataset(config(finished_run, resolution=256, heldout_share=0.0), epochs=1)
    seen = set()
    for sample in ds:
        key, start = sample["key"].split("@")
        pair, start = pairs[key], int(start)
        if start >= 5:  # the same clip's real frames before the segment
            case = "clip"
            assert sample["motion_valid"] and np.array_equal(frames(sample["motion"]), pair["real"][start - 5:start])
        elif len(pair["motion"]):  # the stored crops of the contiguous clip before
            case = "stored"
            assert sample["motion_valid"] and np.array_equal(frames(sample["motion"]), pair["motion"][-5:])
        else:
            case = "none"
            assert not sample["motion_valid"] and not sample["motion"].any()
        seen.add(case)
    assert seen == {"clip", "stored", "none"}


def test_audio_features_of_both_tracks_with_an_encoder(finished_run):
    from factory.models.audio_features import AudioFeatureConfig, AudioFeatures

    encoder = AudioFeatures(AudioFeatureConfig(tiny={}, device="cpu"))
    sample = next(iter(PairDataset(config(finished_run), audio_encoder=encoder)))
    shape = (T, encoder.window, encoder.dim)
    assert sample["audio_features"].shape == shape and sample["alt_audio_features"].shape == shape
    assert not torch.allclose(sample["audio_features"], sample["alt_audio_features"])


def test_the_heldout_split_is_whole_videos_and_streams_in_manifest_order(finished_run, pairs):
    train, held = PairDataset(config(finished_run)), PairDataset(config(finished_run), "heldout")
    train_videos = {r.video_key for r in train.rows}
    held_videos = {r.video_key for r in held.rows}
    assert train_videos and held_videos and not train_videos & held_videos
    assert sorted(r.key for r in train.rows + held.rows) == sorted(pairs)
    once = raw_keys(held)
    assert once == raw_keys(PairDataset(config(finished_run), "heldout"))  # no shuffle, no draw
    assert [(k, s) for _, _, k, s in once] == [(r.key, s) for r in held.rows for s in (0, 9)]


def epoch_of(dataset) -> list[tuple[str, int]]:
    """One epoch of this rank's raw stream: (pair key, start)."""
    length = dataset.sources[0].epoch_length(0)
    return [(k, s) for _, _, k, s in raw_keys(dataset, length)]


@pytest.mark.parametrize("world_size", [2, 3, 4, 5])
def test_ranks_cover_every_segment_once_with_more_or_fewer_shards_than_ranks(finished_run, world_size):
    cfg = config(finished_run, heldout_share=0.0)  # 8 pairs in 3 shards
    ranks = [PairDataset(cfg, rank=r, world_size=world_size) for r in range(world_size)]
    assert all(ds.sources[0].by_pairs == (world_size > 3) for ds in ranks)
    seen = [epoch_of(ds) for ds in ranks]
    assert all(seen)  # no rank left empty
    union = [item for rank in seen for item in rank]
    assert len(union) == len(set(union)) == 16  # every segment once
    if world_size <= 3:  # split_by_node: a rank's pairs come from its own shards
        shards = [{r.shard for r in ds.rows if (r.key, 0) in set(items)} for ds, items in zip(ranks, seen)]
        assert all(not a & b for i, a in enumerate(shards) for b in shards[i + 1:])


def test_more_ranks_than_pairs_is_refused(finished_run):
    with pytest.raises(ConfigError, match="cannot feed 9 ranks"):
        PairDataset(config(finished_run, heldout_share=0.0), rank=0, world_size=9)


def test_batches_are_the_same_with_any_number_of_loader_workers_even_with_fewer_shards(finished_run):
    def first(workers: int, n: int = 3):
        # rank 1 of 2 reads one shard: fewer shards than workers, and both workers make batches
        ds = PairDataset(config(finished_run, heldout_share=0.0), rank=1, world_size=2, batch_size=2)
        assert len(ds.sources[0].shard_order(0)) == 1
        it = iter(pair_loader(ds, num_workers=workers))
        return [next(it) for _ in range(n)]

    for a, b in zip(first(0), first(2)):
        assert a["key"] == b["key"] and torch.equal(a["position"], b["position"])
        assert torch.equal(a["synthetic"], b["synthetic"]) and torch.equal(a["references"], b["references"])


@pytest.mark.parametrize("variant", ["plain", "resample", "two_ranks"])
def test_resume_at_any_position_continues_the_same_stream(finished_run, variant):
    kw = {"resample": True} if variant == "resample" else {}
    ranks = {"rank": 1, "world_size": 2} if variant == "two_ranks" else {}
    cfg = config(finished_run, heldout_share=0.0, **kw)
    whole = raw_keys(PairDataset(cfg, **ranks), 40)  # several epochs
    assert len(whole) == 40 and [p for p, *_ in whole] == list(range(40))
    for k in (0, 3, 7, 8, 16, 23, 31):
        again = PairDataset(cfg, **ranks)
        again.start_at(k)
        assert raw_keys(again, 40 - k) == whole[k:], k
    if variant == "plain":  # 16 segments an epoch, each once, in a new shuffled order each epoch
        epochs = [[(key, start) for _, _, key, start in whole[i:i + 16]] for i in (0, 16)]
        assert sorted(epochs[0]) == sorted(epochs[1]) and len(set(epochs[0])) == 16
        assert epochs[0] != sorted(epochs[0]) and epochs[0] != epochs[1]


def test_a_resumed_dataset_yields_the_same_decoded_samples_and_refuses_other_data(finished_run):
    cfg = config(finished_run)
    ds = PairDataset(cfg)
    it = iter(ds)
    for _ in range(3):
        next(it)
    state = ds.state_dict()
    assert state["position"] == 3
    want = next(it)
    again = PairDataset(cfg)
    again.load_state_dict(state)
    got = next(iter(again))
    assert got["key"] == want["key"] and got["position"] == 3
    for name in ("target", "synthetic", "references", "motion", "alpha", "audio"):
        assert torch.equal(got[name], want[name]), name
    with pytest.raises(ValueError, match="data changed"):
        PairDataset(config(finished_run, min_scores={"csim": 0.5})).load_state_dict(state)


def test_min_scores_keep_the_pairs_at_or_above_and_count_the_rest(finished_run, pairs, caplog):
    csims = sorted(p["meta"]["scores"]["csim"] for p in pairs.values())
    threshold = csims[len(csims) // 2]
    want = {k for k, p in pairs.items() if p["meta"]["scores"]["csim"] >= threshold}
    with caplog.at_level(logging.INFO, logger="factory.trainers.pair_data"):
        ds = PairDataset(config(finished_run, heldout_share=0.0, min_scores={"csim": threshold}), epochs=1)
    assert {r.key for r in ds.rows} == want and 0 < len(want) < len(pairs)
    assert ds.skipped == {f"csim < {threshold:g}": len(pairs) - len(want)}
    assert f"{len(want)} of {len(pairs)} pairs kept (min_scores" in caplog.text and f"csim < {threshold:g}" in caplog.text
    assert {k for _, _, k, _ in raw_keys(ds)} == want  # the stream holds only those
    none = PairDataset(config(finished_run, heldout_share=0.0, min_scores={"no_such_score": 0.0}))
    assert none.skipped == {"no_such_score missing": len(pairs)} and raw_keys(none) == []
    short = PairDataset(config(finished_run, heldout_share=0.0, segment_frames=29))  # longer than the pairs
    assert short.skipped == {"fewer than 29 frames": len(pairs)} and raw_keys(short) == []


def test_weighted_manifests_mix_by_their_weights(finished_run, tmp_path):
    other = shutil.copytree(finished_run, tmp_path / "other")
    cfg = config(finished_run, heldout_share=0.0, weights=[3.0, 1.0])
    cfg.manifests = [str(finished_run), str(other)]
    ds = PairDataset(cfg)
    share = float(np.mean(ds.choices(0, 8000) == 0))
    assert abs(share - 0.75) < 0.02
    stream = raw_keys(ds, 60)
    assert [s for _, s, _, _ in stream] == ds.choices(0, 60).tolist()
    # each manifest's own stream is its unmixed stream, in order
    alone = PairDataset(config(finished_run, heldout_share=0.0))
    mine = [(k, s) for _, src, k, s in stream if src == 0]
    assert mine == [(k, s) for _, _, k, s in raw_keys(alone, len(mine))]
    again = PairDataset(cfg)
    again.start_at(37)
    assert raw_keys(again, 23) == stream[37:]
    cfg0 = config(finished_run, heldout_share=0.0, weights=[1.0, 0.0])
    cfg0.manifests = [str(finished_run), str(other)]
    assert {s for _, s, _, _ in raw_keys(PairDataset(cfg0), 30)} == {0}


def test_the_index_from_the_sample_table_matches_the_shards(finished_run, tmp_path):
    run = shutil.copytree(finished_run, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    from_table = index_manifest(0, run / "manifest.json", check=True)
    del manifest["table"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert index_manifest(0, run / "manifest.json", check=True) == from_table
    assert len(from_table) == 8 and all(r.frames == 25 and dict(r.scores)["csim"] > 0 for r in from_table)


def test_config_loads_thresholds_and_refuses_bad_values(finished_run):
    cfg = build(PairDataConfig, {"manifests": [str(finished_run)], "min_scores": {"csim": 0.9, "lmd": 1.5}})
    assert cfg.min_scores == {"csim": 0.9, "lmd": 1.5}
    for bad, key in [({"min_scores": {"csim": "high"}}, "min_scores"), ({"weights": [1.0, 2.0]}, "weights"),
                     ({"segment_frames": 10}, "segment_frames"), ({"manifests": []}, "manifests")]:
        with pytest.raises(ConfigError, match=key):
            PairDataset(PairDataConfig(**{"manifests": [str(finished_run)], **bad}))


def test_the_loops_resumable_batches_continue_exactly(finished_run):
    """The loop's own resume path (loop.ResumableBatches over dit_recipe.ClipBatches, which takes
    any dataset with a position) restores a PairDataset mid-epoch."""
    from factory.trainers.dit_recipe import ClipBatches
    from factory.trainers.loop import ResumableBatches

    cfg = config(finished_run, heldout_share=0.0)
    first = ResumableBatches(ClipBatches(PairDataset(cfg, batch_size=3), 0))
    for _ in range(3):
        next(first)
    state = first.state_dict()
    want = next(first)
    again = ResumableBatches(ClipBatches(PairDataset(cfg, batch_size=3), 0), state)
    got = next(again)
    assert got["key"] == want["key"] and torch.equal(got["position"], torch.tensor([9, 10, 11]))
    assert torch.equal(got["synthetic"], want["synthetic"]) and torch.equal(got["audio"], want["audio"])


# -- the fast paths yield what the plain ones do ------------------------------------------------

@pytest.mark.parametrize("resolution", [32, 100])
def test_segments_resized_once_per_pair_equal_each_segment_resized_from_the_stored_frames(finished_run, pairs,
                                                                                         resolution):
    """The loader resizes a pair's frames once and slices its segments; the reference resizes
    each segment's stored frames (clip_data.video_tensor on the reader's full crops), as the
    loader did before. Shrinking (32) and growing (100) must give the same floats."""
    from factory.trainers.clip_data import face_mask, lip_mask, video_tensor

    cfg = config(finished_run, resolution=resolution, heldout_share=0.0, segment_stride=3, reference_frames=3)
    ds = PairDataset(cfg, epochs=1)
    seen_motion = set()
    for sample in ds:
        key, start = sample["key"].split("@")
        pair, start = pairs[key], int(start)
        seg = slice(start, start + T)
        assert torch.equal(sample["target"], video_tensor(pair["real"][seg], resolution))
        assert torch.equal(sample["synthetic"], video_tensor(pair["syn"][seg], resolution))
        refs = ds.references(pair, start, 0)  # the same draw, on the full-size frames
        assert torch.equal(sample["references"], video_tensor(refs, resolution))
        before = np.concatenate([pair["motion"], pair["real"][:start]])
        if len(before) >= 5:
            seen_motion.add("clip" if start >= 5 else "stored + clip" if start else "stored")
            assert torch.equal(sample["motion"], video_tensor(before[-5:], resolution))
        alpha = np.stack([cv2.resize(a, (resolution,) * 2, interpolation=cv2.INTER_AREA if resolution < 256
                                     else cv2.INTER_LINEAR) for a in pair["alpha"][seg].astype(np.float32) / 255])
        assert torch.equal(sample["alpha"][0], torch.from_numpy(alpha))
        lms = pair["real_landmarks"][seg].astype(np.float32) * (resolution / 256)
        assert torch.equal(sample["face_mask"], face_mask(lms, resolution))
        assert torch.equal(sample["lip_mask"], lip_mask(lms, resolution, cfg.lip_mask_dilation))
    assert seen_motion == {"clip", "stored + clip", "stored"}


def test_video_tensor_gives_x_over_127_5_minus_1_in_float32_for_every_byte():
    from factory.trainers.clip_data import video_tensor

    frames = np.arange(256 * 16 * 3, dtype=np.int64).reshape(16, 16, 16, 3) % 256
    frames = frames.astype(np.uint8)[:, :, :, ::-1].copy()  # every value in every channel
    want = frames.astype(np.float32).transpose(3, 0, 1, 2) / np.float32(127.5) - np.float32(1.0)
    got = video_tensor(frames, 16)
    assert got.dtype == torch.float32 and got.is_contiguous() and np.array_equal(got.numpy(), want)
    assert video_tensor(frames[:0], 8).shape == (3, 0, 8, 8)


def test_the_synthetic_rebuilt_frame_by_frame_equals_the_whole_box_blend():
    """rebuild_syn blends each frame only inside its alpha's bounding box; the reference blends
    the whole stored box (where alpha == 0 the blend gives real back, so both must agree)."""
    from manifests.sample import RAMP, rebuild_syn

    rng = np.random.default_rng(3)
    real = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    box = [0, 16, 48, 64]
    region = rng.integers(0, 256, (6, 48, 48, 3), dtype=np.uint8)
    alpha = np.zeros((6, 64, 64), np.uint8)
    alpha[0, 20:30, 5:40] = rng.integers(0, 256, (10, 35))  # ramp values and full ones
    alpha[2, 16:64, 0:48] = 255  # the whole box
    alpha[3, 40:41, 47:48] = 7  # one pixel at the box's corner
    alpha[5, 30:50, 10:20] = RAMP  # exactly the region
    x0, y0, x1, y1 = box
    w = np.minimum(alpha[:, y0:y1, x0:x1], RAMP).astype(np.int32)[..., None]
    base = real[:, y0:y1, x0:x1].astype(np.int32)
    want = real.copy()
    want[:, y0:y1, x0:x1] = base + (((region.astype(np.int32) - base) * w + RAMP // 2) >> 4)
    got = rebuild_syn(real, region, alpha, box)
    assert np.array_equal(got, want)
    assert np.array_equal(got[1], real[1]) and np.array_equal(got[2, y0:y1, x0:x1], region[2])
