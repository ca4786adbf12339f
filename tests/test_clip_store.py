"""Ingest and pair-making as two pipelines over a clip store: pairs are made many times from clips
stored once; an output folder never mixes two configurations; any filter or the augmentation can be
switched off and the run still completes."""

from __future__ import annotations

import json
import shutil

import pytest
import webdataset as wds

from factory.cli import main
from factory.clip_store import ClipStore
from factory.config import ConfigError
from manifests.sample import REQUIRED_MEMBERS
from manifests.table import read_table
from manifests.verify import verify
from pipelines.pseudo_pairs import claim_output

from tests.cli import CONFIG, LOCAL, SMALL

ARGS = [*SMALL, LOCAL, "input.demo=false", "write.previews=0"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, talking_videos):
    """A clip store ingested from copies of the test videos, which are then deleted: whatever
    reads the store afterwards cannot have decoded a video again."""
    root = tmp_path_factory.mktemp("store")
    videos = root / "videos"
    shutil.copytree(talking_videos, videos)
    code = main(["ingest", CONFIG, *ARGS, f"input.paths=[{videos}]", f"clip_store={root / 'clips'}",
                 f"out={root / 'ignored'}"])
    assert code == 0
    (path,) = (root / "clips").glob("ingest-*")
    shutil.rmtree(videos)
    return path


def pairs(store, out, *overrides) -> int:
    return main(["pairs", CONFIG, *ARGS, f"clip_stores=[{store}]", f"out={out}", *overrides])


def sample_files(out) -> dict[str, set[str]]:
    urls = [str(out / e["url"]) for e in json.loads((out / "manifest.json").read_text())["shardlist"]]
    return {s["__key__"]: {k for k in s if not k.startswith("__")}
            for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)}


def test_ingest_writes_a_store_keyed_by_its_settings(store):
    opened = ClipStore.open(store)
    assert opened.settings()["ingest"]["clip_frames"] == 25
    keys = opened.video_keys()
    assert len(keys) == 3  # one.mp4, two.mp4 and broken.mp4 (rejected, recorded); notes.txt is not a video
    clips = [r for r in opened.records() if r.kind == "clip" and not r.rejected]
    assert clips and all(r.meta["clip_path"].startswith(str(store)) for r in clips)


@pytest.mark.slow
def test_pairs_twice_from_one_store_without_reingest(store, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*")}
    assert pairs(store, tmp_path / "a") == 0
    assert pairs(store, tmp_path / "b", "generate.settings.colour_match=false", "filters.mouth_distance.min_lmd=1.5") == 0
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*")} == before  # nothing re-ingested or rewritten
    rows = {name: read_table(tmp_path / name / "samples.parquet") for name in ("a", "b")}
    for name in rows:
        assert verify(tmp_path / name)[0] == []
    pair_keys = [{r["key"] for r in rows[n] if r["kind"] == "pair"} for n in rows]
    assert pair_keys[0] and pair_keys[0] == pair_keys[1]  # the same clips, paired again


@pytest.mark.slow
def test_an_output_folder_never_mixes_two_configurations(store, tmp_path, capsys):
    assert pairs(store, tmp_path / "a", "filters.identity.enabled=false") == 0
    assert pairs(store, tmp_path / "a", "filters.identity.enabled=false") == 0  # same settings: resumes
    assert pairs(store, tmp_path / "a", "filters.identity.enabled=false", "executor.kind=local",
                 "generate.resources.pool_size=1") == 0  # how it runs is not what it makes
    capsys.readouterr()
    assert pairs(store, tmp_path / "a", "filters.identity.enabled=false", "generate.feather_sigma=3") == 2
    assert "generate.feather_sigma: 2.0 -> 3.0" in capsys.readouterr().err


def test_claim_output_names_every_difference(tmp_path):
    claim_output(tmp_path, {"ingest": {"crop_size": 256}, "seed": 0})
    with pytest.raises(ConfigError, match=r"ingest.crop_size: 256 -> 512; seed: 0 -> 1"):
        claim_output(tmp_path, {"ingest": {"crop_size": 512}, "seed": 1})


@pytest.mark.slow
@pytest.mark.parametrize("off", ["filters.mouth_distance.enabled=false", "filters.identity.enabled=false",
                                 "augment.share=0"])
def test_each_filter_and_the_augmentation_can_be_switched_off(store, tmp_path, off):
    assert pairs(store, tmp_path / "o", off, "augment.share=1.0" if off != "augment.share=0" else "seed=0") == 0
    assert verify(tmp_path / "o")[0] == []
    rows = read_table(tmp_path / "o" / "samples.parquet")
    kept = [r for r in rows if r["kind"] == "pair" and r["fate"] == "kept"]
    assert kept and not any(str(r["reason"]).startswith("encode_error") for r in rows)
    files = sample_files(tmp_path / "o")
    assert all(REQUIRED_MEMBERS <= f for f in files.values())
    scores = {k[len("score_"):] for r in kept for k, v in r.items() if k.startswith("score_") and v is not None}
    assert "syn_face_ratio" in scores or "mouth_distance" in off
    if "mouth_distance" in off:
        assert "lmd" not in scores
    if "identity" in off:
        assert "csim" not in scores


@pytest.mark.slow
def test_a_held_out_split_keeps_each_speaker_on_one_side(store, tmp_path):
    from manifests.reader import iter_pairs

    assert pairs(store, tmp_path / "s", "pair.heldout_share=0.5", "seed=3") == 0
    rows = [r for r in read_table(tmp_path / "s" / "samples.parquet") if r["kind"] == "pair" and r["fate"] == "kept"]
    sides: dict[str, set] = {}
    for r in rows:
        sides.setdefault(r["speaker"], set()).add(r["split"])
    assert rows and all(len(s) == 1 for s in sides.values()) and set().union(*sides.values()) <= {"train", "heldout"}
    manifest = tmp_path / "s" / "manifest.json"
    for side in ("train", "heldout"):
        keys = {p["meta"]["key"] for p in iter_pairs(manifest, split=side)}
        assert keys == {r["key"] for r in rows if r["split"] == side}
