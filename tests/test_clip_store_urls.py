"""The clip store, its clips and occlusion masks, and the input videos on fsspec URLs: a real
video put on `memory://` is found, decoded and ingested by IngestStage (local executor) into a
`memory://` clip store, with clips identical to a local ingest of the same bytes; a rerun reuses
the store; the occlusion and generate stages read clips and masks from URLs and store masks
beside a URL clip; and a store round trip plus an ingest on the local S3 server (moto), through
s3fs as on a real bucket."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import Future

import numpy as np
import pytest

from factory import storage
from factory.clip_store import ClipStore
from factory.clips import (Clip, load_clip, load_occlusion, occlusion_path, open_npz, save_clip,
                           save_occlusion)
from factory.config import ConfigError
from factory.executors.local import LocalExecutor
from factory.inputs import InputConfig, discover_videos, video_key
from factory.media.audio import decode_audio
from factory.media.video import iter_frames, probe
from factory.records import Record
from factory.stages.generate import GenerateConfig, GenerateStage, sibling_occlusion
from factory.stages.ingest import IngestConfig, IngestStage
from factory.stages.occlusion import OcclusionConfig, OcclusionStage
from tests.tiny_qwen import ForceText, tiny_qwen_path  # noqa: F401  (fixture)

IDENTITY = {"ingest": {"clip_frames": 25}}
ARRAYS = ("frames", "landmarks", "transforms", "audio")
PER_VIDEO = ("clip_path", "source", "video_key", "speaker")  # meta naming the video (speaker: its key by default)


def config(**overrides) -> IngestConfig:
    return IngestConfig(clip_frames=25, clip_stride=25, **overrides)


def bucket() -> str:
    return f"memory://t-{uuid.uuid4().hex[:8]}"


def ingest(paths: list[str], store: ClipStore, cfg: IngestConfig | None = None) -> list[Record]:
    """discover_videos + IngestStage through the local executor: what `factory ingest` does."""
    videos, _ = discover_videos(InputConfig(paths=paths))
    return sorted(LocalExecutor().map([IngestStage(cfg or config(), store)], videos), key=lambda r: r.key)


def clip_suffix(record: Record) -> str:
    return record.key[len(record.meta["video_key"]):]


def kept(records: list[Record]) -> list[Record]:
    return [r for r in records if r.kind == "clip" and not r.rejected]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from factory.demo import make_talking_video

    return make_talking_video(tmp_path_factory.mktemp("video") / "one.mp4",
                              "Peter piper picked a peck of pickled peppers, a peck indeed.", seconds=5.0, size=256,
                              seed=1)


@pytest.fixture(scope="module")
def local_ingest(video, tmp_path_factory):
    store = ClipStore.for_settings(tmp_path_factory.mktemp("local") / "clips", IDENTITY)
    return store, ingest([str(video)], store)


@pytest.fixture(scope="module")
def url_ingest(video):
    """The same video's bytes on memory://, ingested into a memory:// store."""
    root = bucket()
    source = f"{root}/videos/one.mp4"
    storage.put_bytes(source, video.read_bytes())
    store = ClipStore.for_settings(f"{root}/clips", IDENTITY)
    yield store, ingest([f"{root}/videos"], store), source
    storage.remove(root)


# -- decoding and hashing a URL ---------------------------------------------------------------------

def test_probe_frames_audio_and_digest_of_a_url_equal_the_local_file(video):
    url = f"{bucket()}/in/one.mp4"
    storage.put_bytes(url, video.read_bytes())
    assert probe(url) == probe(video)
    local_frames = [f for _, f in iter_frames(video)]
    url_frames = [f for _, f in iter_frames(url)]
    assert len(url_frames) == len(local_frames) == 125
    assert all(np.array_equal(a, b) for a, b in zip(local_frames, url_frames))
    assert np.array_equal(decode_audio(url).samples, decode_audio(video).samples)
    assert storage.digest(url) == storage.digest(video) and len(storage.digest(url)) == 64
    with pytest.raises(Exception, match="missing_file"):
        probe(url + ".gone")
    storage.put_bytes(url + ".empty", b"")
    with pytest.raises(Exception, match="empty_file"):
        probe(url + ".empty")


# -- ingest into a memory:// store ------------------------------------------------------------------

def test_a_url_ingest_makes_the_same_clips_as_a_local_one(local_ingest, url_ingest):
    (_, local_records), (store, records, source) = local_ingest, url_ingest
    assert len(kept(records)) >= 2
    assert [clip_suffix(r) for r in records] == [clip_suffix(r) for r in local_records]
    assert [r.rejected for r in records] == [r.rejected for r in local_records]
    for url_clip, local_clip in zip(kept(records), kept(local_records)):
        assert url_clip.meta["clip_path"] == f"{store.path}/clips/{url_clip.key}.npz"  # a URL, `//` kept
        assert url_clip.meta["source"] == source
        a, b = load_clip(url_clip.meta["clip_path"]), load_clip(local_clip.meta["clip_path"])
        for name in ARRAYS:
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        strip = lambda meta: {k: v for k, v in meta.items() if k not in PER_VIDEO}  # noqa: E731
        assert strip(url_clip.meta) == strip(local_clip.meta)
    assert kept(records)[0].meta["source_sha256"] == storage.digest(source)


def test_a_url_store_holds_one_object_per_file_and_no_temporaries(url_ingest):
    store, records, _ = url_ingest
    (video,) = {r.meta["video_key"] for r in records}
    names = sorted(p[len(store.path) + 1:] for p in storage.find(store.path))
    assert names == sorted(["config.yaml", f"videos/{video}.json",
                            *(f"clips/{r.key}.npz" for r in kept(records))])
    opened = ClipStore.open(store.path)
    assert opened == store and opened.id == storage.name(store.path) and opened.id.startswith("ingest-")
    assert opened.settings() == IDENTITY and opened.video_keys() == [video]
    assert [r.key for r in opened.records()] == [r.key for r in records]
    ledger = json.loads(storage.read_text(store.video_path(video)))
    assert [row["key"] for row in ledger] == [r.key for r in records]


def test_a_rerun_reuses_the_url_store_without_decoding(url_ingest, video):
    store, records, source = url_ingest
    before = {p: storage.read_bytes(p) for p in storage.find(store.path)}
    assert store.is_done(records[0].meta["video_key"])
    videos, _ = discover_videos(InputConfig(paths=[source]))
    storage.remove(source)  # the source gone: only the store's ledger can answer
    try:
        again = sorted(LocalExecutor().map([IngestStage(config(), store)], videos), key=lambda r: r.key)
    finally:
        storage.put_bytes(source, video.read_bytes())
    assert [(r.key, r.rejected, r.meta.get("clip_path")) for r in again] == \
        [(r.key, r.rejected, r.meta.get("clip_path")) for r in records]
    assert {p: storage.read_bytes(p) for p in storage.find(store.path)} == before  # nothing rewritten


def test_a_url_store_made_with_other_settings_is_refused():
    root = f"{bucket()}/clips"
    store = ClipStore.for_settings(root, IDENTITY)
    assert ClipStore.for_settings(root, IDENTITY) == store  # the same settings: reopened
    storage.put_bytes(f"{store.path}/config.yaml", "ingest:\n  clip_frames: 77\n")  # a hand-edited store
    with pytest.raises(ConfigError, match=r"made with other settings: ingest.clip_frames: 77 -> 25"):
        ClipStore.for_settings(root, IDENTITY)
    with pytest.raises(ConfigError, match="not a clip store"):
        ClipStore.open(f"{root}/nothing-here")
    storage.remove(root)


def test_a_clip_whose_face_changes_is_removed_from_a_url_store(url_ingest):
    store, records, _ = url_ingest
    path = store.clip_path("changed_c0000")
    clip = load_clip(kept(records)[0].meta["clip_path"])
    save_clip(path, clip)
    faces = []
    for vector in ([1.0, 0.0], [0.0, 1.0]):  # two embeddings that disagree completely
        face = Future()
        face.set_result(np.array([vector]))
        faces.append(face)
    record = Record("changed_c0000", "clip", meta={"clip_path": path}, media=faces)
    checked = IngestStage(config(), store).check_identity(record)
    assert checked.rejected == "face_changed_in_clip" and "clip_path" not in checked.meta
    assert not storage.exists(path)


# -- input discovery on a prefix ----------------------------------------------------------------------

def test_discover_videos_on_a_memory_prefix():
    root = bucket()
    for name in ["b.mp4", "A.MOV", "sub/c d.ünï.mkv", "notes.txt", ".hidden.mp4", "sub/.x.mkv"]:
        storage.put_bytes(f"{root}/in/{name}", b"x")
    storage.put_bytes(f"{root}/single/clip.bin", b"x")  # named explicitly: tried whatever its extension
    storage.put_bytes(f"{root}/speakers.json", json.dumps({"b.mp4": "bob", f"{root}/single/clip.bin": "carol"}))
    gone = f"{root}/gone.mp4"
    records, skipped = discover_videos(InputConfig(paths=[f"{root}/in", f"{root}/single/clip.bin", gone],
                                                   speaker_map=f"{root}/speakers.json"))
    by_source = {r.meta["source"]: r for r in records}
    assert sorted(by_source) == sorted([f"{root}/in/A.MOV", f"{root}/in/b.mp4", f"{root}/in/sub/c d.ünï.mkv",
                                        f"{root}/single/clip.bin", gone])
    assert skipped == 1  # notes.txt; dot files are not counted
    assert by_source[gone].rejected == "missing_file" and by_source[gone].meta["rejected_by"] == "inputs"
    assert by_source[f"{root}/in/b.mp4"].meta["speaker"] == "bob"
    assert by_source[f"{root}/single/clip.bin"].meta["speaker"] == "carol"
    for source, r in by_source.items():
        assert r.key == video_key(source) and "." not in r.key
        assert not r.rejected or source == gone
    assert by_source[f"{root}/in/b.mp4"].key.startswith("b-")
    # the key hashes the URL's text: the same name under another prefix is another video
    assert video_key(f"{root}/in/b.mp4") != video_key(f"{root}/other/b.mp4")
    assert video_key(f"{root}/in/b.mp4") == video_key(f"{root}/in/b.mp4")
    with pytest.raises(ConfigError, match="speaker_map file not found"):
        discover_videos(InputConfig(paths=[], speaker_map=f"{root}/none.json"))
    storage.remove(root)


# -- occlusion masks and generation from URLs ---------------------------------------------------------

def test_occlusion_masks_live_beside_a_url_clip():
    root = bucket()
    clip_path = f"{root}/store/clips/v-1_c0000.npz"
    masks_path = occlusion_path(clip_path, "abc")
    assert masks_path == f"{root}/store/clips/v-1_c0000.occlusion-abc.npz"
    assert sibling_occlusion(masks_path, clip_path, f"{root}/store/clips/v-1_c0003.npz") == \
        f"{root}/store/clips/v-1_c0003.occlusion-abc.npz"
    masks = np.random.default_rng(0).random((3, 16, 16)) > 0.5
    save_occlusion(masks_path, masks, '[{"label": "hand"}]')
    assert np.array_equal(load_occlusion(masks_path), masks)
    record = Record("v-1_c0000", "clip", meta={"clip_path": clip_path})
    stage = OcclusionStage(OcclusionConfig(enabled=True), None, "occlusion.vlm_path", max_pixels=1)
    stage.tag = "abc"  # masks stored by these settings: reused, no model is needed
    out = stage.mask_one(record)
    assert out.meta["occlusion_masks"] == masks_path and out.meta["occluders"] == [{"label": "hand"}]
    storage.remove(root)


def test_the_occlusion_stage_masks_a_url_clip_and_stores_the_masks_beside_it(url_ingest, tiny_qwen_path):  # noqa: F811
    store, records, _ = url_ingest
    clip = load_clip(kept(records)[0].meta["clip_path"])
    path = store.clip_path("occluded_c0000")
    save_clip(path, Clip(clip.frames[:4], clip.landmarks[:4], clip.transforms[:4], clip.audio[:4 * 640]))
    cfg = OcclusionConfig(enabled=True, image_size=64, max_crop_share=1.0, max_face_share=1.0)
    stage = OcclusionStage(cfg, tiny_qwen_path, "occlusion.vlm_path", max_pixels=112 * 112, allow_random_weights=True)
    stage.ensure_set_up()
    hand = '[{"bbox_2d": [37, 61, 74, 86], "label": "hand"}]'  # in the 112x112 frame the model sees
    stage.logits_processor = ForceText(stage.vlm.processor.tokenizer, hand)
    (record,) = stage([Record("occluded_c0000", "clip", meta={"clip_path": path})])
    assert not record.rejected and [o["label"] for o in record.meta["occluders"]] == ["hand"]
    assert record.meta["occlusion_masks"] == occlusion_path(path, stage.tag) == f"{path[:-4]}.occlusion-{stage.tag}.npz"
    assert load_occlusion(record.meta["occlusion_masks"]).shape == (4, 256, 256)
    asked = stage.logits_processor.calls
    (again,) = stage([Record("occluded_c0000", "clip", meta={"clip_path": path})])
    assert stage.logits_processor.calls == asked and again.meta["occluders"] == record.meta["occluders"]
    storage.remove(path), storage.remove(record.meta["occlusion_masks"])


def test_generate_reads_clips_and_masks_from_urls_as_from_files(local_ingest, url_ingest):
    (_, local_records), (_, url_records, _) = local_ingest, url_ingest
    outputs = []
    for records in (local_records, url_records):
        real, alt = kept(records)[:2]
        hand = np.zeros((25, 256, 256), bool)
        hand[:, 150:200, 90:140] = True  # a hand in front of the mouth on the real clip
        real_masks, alt_masks = (occlusion_path(c.meta["clip_path"], "t") for c in (real, alt))
        save_occlusion(real_masks, hand)
        save_occlusion(alt_masks, np.roll(hand, 20, axis=2))
        pair = Record(real.key, "pair", meta={**real.meta, "alt_clip_path": alt.meta["clip_path"],
                                              "occlusion_masks": str(real_masks)})
        stage = GenerateStage(GenerateConfig())
        (done,) = list(LocalExecutor().map([stage], [pair]))
        outputs.append(done)
        storage.remove(real_masks), storage.remove(alt_masks)
    local, url = (o.media for o in outputs)
    assert url.occlusion is not None and url.occlusion.any()
    assert np.array_equal(url.occlusion, local.occlusion)
    assert np.array_equal(url.syn_frames, local.syn_frames) and np.array_equal(url.alpha, local.alpha)
    # occluded pixels stay real
    assert np.array_equal(url.syn_frames[url.occlusion], url.real_frames[url.occlusion])


# -- the local S3 server ---------------------------------------------------------------------------

def test_a_clip_store_round_trip_on_s3(s3_bucket, video, local_ingest):
    _, local_records = local_ingest
    source = f"{s3_bucket}/videos/one.mp4"
    storage.upload(video, source)
    store = ClipStore.for_settings(f"{s3_bucket}/clips", IDENTITY)
    assert store.path.startswith(f"{s3_bucket}/clips/ingest-")
    records = ingest([f"{s3_bucket}/videos"], store, config(max_clips_per_video=1))
    (clip,) = kept(records)
    assert clip.meta["clip_path"] == f"{store.path}/clips/{clip.key}.npz"
    assert clip.meta["source_sha256"] == storage.digest(video)
    a, b = load_clip(clip.meta["clip_path"]), load_clip(kept(local_records)[0].meta["clip_path"])
    for name in ARRAYS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    opened = ClipStore.open(store.path)
    assert opened.is_done(clip.meta["video_key"]) and opened.settings() == IDENTITY
    assert [r.key for r in opened.records()] == [r.key for r in records]
    masks = np.zeros((25, 8, 8), bool)
    masks[3, 2:5, 1:4] = True
    save_occlusion(occlusion_path(clip.meta["clip_path"], "s3"), masks)
    assert np.array_equal(load_occlusion(occlusion_path(clip.meta["clip_path"], "s3")), masks)
    with open_npz(occlusion_path(clip.meta["clip_path"], "s3")) as z:
        assert tuple(z["shape"]) == masks.shape
    again = ingest([f"{s3_bucket}/videos"], store, config(max_clips_per_video=1))
    assert [(r.key, r.meta.get("clip_path")) for r in again] == [(r.key, r.meta.get("clip_path")) for r in records]
