"""factory/files.py: atomic writes leave the old file or the new one, never a half; one hasher."""

import hashlib

import numpy as np
import pytest

from factory.files import atomic_path, atomic_write, file_digest


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("old")
    atomic_write(target, "new")
    atomic_write(tmp_path / "blob.bin", b"\x00\x01")
    assert target.read_text() == "new" and (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "manifest.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "table.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.parquet"]


def test_the_suffix_keeps_the_extension_np_savez_needs(tmp_path):
    target = tmp_path / "clip.npz"
    with atomic_path(target, suffix=".tmp.npz") as tmp:
        np.savez(tmp, x=np.arange(3))
    with np.load(target) as z:
        assert z["x"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["clip.npz"]


def test_file_digest_matches_hashlib_across_chunks(tmp_path):
    data = np.random.default_rng(0).bytes((1 << 20) + 123)  # spans two 1 MiB chunks
    path = tmp_path / "video.bin"
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()
    assert file_digest(path, "md5") == hashlib.md5(data).hexdigest()
