"""The run's shard sink, by the kind of `out`: a local folder gets `manifests.writer.ShardSink`
(.partial + rename + fsynced ledger), a URL `manifests.object_commit.ObjectShardSink` (one PUT
per shard, commit records, manifest last). Both have the same methods: write, reject, done,
entry, entries, shard_lists, close, write_manifest, and the lists `repaired`."""

from __future__ import annotations

from factory import storage
from manifests.object_commit import ObjectShardSink
from manifests.writer import ShardSink, WriteConfig


def open_sink(out: str, write: WriteConfig) -> ShardSink | ObjectShardSink:
    if storage.is_url(out):
        return ObjectShardSink(out, write.shard_maxcount, write.shard_maxsize)
    return ShardSink(storage.local(out), write.shard_maxcount, write.shard_maxsize)
