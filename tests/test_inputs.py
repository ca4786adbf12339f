import json

import pytest

from factory.config import ConfigError
from factory.inputs import InputConfig
from factory.inputs import discover_videos, video_key


def test_folders_are_scanned_and_odd_names_get_clean_keys(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["b.mp4", "A.MOV", "sub/c d.ünï.mkv", "notes.txt", ".hidden.mp4"]:
        (tmp_path / name).write_bytes(b"x")
    records, skipped = discover_videos(InputConfig(paths=[str(tmp_path)]))
    names = sorted(r.meta["source"].rsplit("/", 1)[-1] for r in records)
    assert names == ["A.MOV", "b.mp4", "c d.ünï.mkv"] and skipped == 1
    for r in records:
        assert "." not in r.key and r.key == video_key(__import__("pathlib").Path(r.meta["source"]))


def test_speaker_map_and_missing_paths(tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(b"x"), b.write_bytes(b"x")
    mapping = tmp_path / "speakers.json"
    mapping.write_text(json.dumps({"a.mp4": "alice", str(b): "alice"}))
    records, _ = discover_videos(InputConfig(paths=[str(a), str(b), str(tmp_path / "gone.mp4")],
                                             speaker_map=str(mapping)))
    by_name = {r.meta["source"].rsplit("/", 1)[-1]: r for r in records}
    assert by_name["a.mp4"].meta["speaker"] == by_name["b.mp4"].meta["speaker"] == "alice"
    assert by_name["gone.mp4"].rejected == "missing_file"


def test_bad_speaker_map_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="speaker_map"):
        discover_videos(InputConfig(paths=[], speaker_map=str(tmp_path / "none.json")))


def test_keys_from_hostile_names_are_safe(tmp_path):
    import re

    names = ["..mp4", "a b\nc.mp4", "-rf .mp4", "x" * 300 + ".mp4", "日本.mp4"]
    for name in names:
        try:
            (tmp_path / name).write_bytes(b"x")
        except OSError:  # a name this filesystem refuses
            continue
        key = video_key(tmp_path / name)
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,51}", key), key
