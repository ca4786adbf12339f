"""The storage layer (factory/storage.py) on a local folder, on fsspec's memory:// and on a local
S3 (moto's server, tests/s3_server.py): the same answers everywhere; whole objects; a staged
folder complete or absent; no credentials in URLs."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from factory import storage
from factory.config import ConfigError


@pytest.fixture(params=["local", "memory", "s3"])
def root(request, tmp_path):
    """A fresh folder of each kind."""
    if request.param == "local":
        return str(tmp_path / "root")
    if request.param == "memory":
        return f"memory://bucket-{uuid.uuid4().hex[:8]}/root"
    return request.getfixturevalue("s3_bucket") + "/root"


def test_whole_objects_read_back_with_their_size_md5_and_listing(root):
    data = bytes(range(256)) * 5000  # > one md5 chunk
    storage.put_bytes(storage.join(root, "shards", "a.tar"), data)
    storage.put_bytes(storage.join(root, "shards", "b.tar"), b"bee")
    storage.put_bytes(storage.join(root, "manifest.json"), '{"x": 1}')

    a = storage.join(root, "shards", "a.tar")
    assert storage.read_bytes(a) == data and storage.read_text(storage.join(root, "manifest.json")) == '{"x": 1}'
    assert storage.size(a) == len(data) and storage.md5(a) == hashlib.md5(data).hexdigest()
    assert storage.exists(a) and storage.isfile(a) and not storage.isfile(storage.join(root, "shards"))
    assert storage.isdir(storage.join(root, "shards")) and not storage.exists(storage.join(root, "nothing"))
    with storage.open_file(a) as f:
        assert f.read(10) == data[:10]
    assert storage.glob(storage.join(root, "shards", "*.tar")) == [a, storage.join(root, "shards", "b.tar")]
    assert storage.ls(root) == [storage.join(root, "manifest.json"), storage.join(root, "shards")]
    assert storage.parent(a) == storage.join(root, "shards") and storage.name(a) == "a.tar"
    with storage.local_file(a) as path:
        assert path.read_bytes() == data
    before = storage.version(a)
    storage.put_bytes(a, b"other bytes")
    assert storage.version(a) != before  # the pair index's cache key sees a replaced manifest

    storage.remove(storage.join(root, "shards"))
    assert storage.glob(storage.join(root, "shards", "*")) == [] and storage.ls(storage.join(root, "shards")) == []
    storage.remove(storage.join(root, "shards"))  # nothing there: not an error


def test_a_staged_folder_is_complete_or_absent(root):
    final = storage.join(root, "checkpoints", "step-00000002")
    with pytest.raises(RuntimeError):
        with storage.staged_dir(final, last="trainer.pt") as tmp:
            (tmp / "model.safetensors").write_bytes(b"weights")
            raise RuntimeError("killed while writing")
    assert not storage.exists(storage.join(final, "model.safetensors"))

    with storage.staged_dir(final, last="trainer.pt") as tmp:
        (tmp / "trainer.pt").write_bytes(b"state")
        (tmp / "model.safetensors").write_bytes(b"weights")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.json").write_text("{}")
    assert storage.read_bytes(storage.join(final, "trainer.pt")) == b"state"
    assert storage.read_text(storage.join(final, "sub", "x.json")) == "{}"
    with storage.staged_dir(final) as tmp:  # replacing: the old folder's files are gone
        (tmp / "only.txt").write_text("new")
    assert [storage.name(p) for p in storage.ls(final)] == ["only.txt"]


def test_local_paths_join_as_pathlib_does(tmp_path):
    assert storage.join(tmp_path, "a", "b.tar") == str(tmp_path / "a" / "b.tar")
    assert storage.parent(tmp_path / "m.json") == str(tmp_path)
    assert not storage.is_url(tmp_path) and not storage.is_url(f"file://{tmp_path}")
    assert storage.is_url("s3://bucket/x") and storage.is_url("memory://x")
    assert storage.join("s3://bucket/run/", "shards", "a.tar") == "s3://bucket/run/shards/a.tar"


def test_credentials_never_ride_in_a_url_or_a_saved_option():
    with pytest.raises(ConfigError, match="credentials in a URL are refused") as info:
        storage.url_to_fs("ftp://user:hunter2@example.invalid/run")
    assert "hunter2" not in str(info.value)
    assert storage.redact("ftp://user:hunter2@host/run") == "ftp://host/run"
    assert storage.public_options({"key": "AKIA", "secret": "s", "token": "t", "endpoint_url": "http://x",
                                   "anon": False}) == {"endpoint_url": "http://x", "anon": False}


def test_refused_urls_name_their_key():
    storage.refuse_urls({"out": "runs/x", "clip_stores": ["a", "b"], "weights": None}, "a run")
    with pytest.raises(ConfigError, match=r"not supported yet for a run \(clip_stores=s3://b/c\)"):
        storage.refuse_urls({"out": "runs/x", "clip_stores": ["a", "s3://b/c"]}, "a run")
