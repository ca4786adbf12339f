"""A local S3 for tests and developers: moto's server mode on 127.0.0.1 (a free port), reached
through s3fs with the standard AWS environment variables, as a real bucket would be.

    with s3_server() as endpoint:            # http://127.0.0.1:PORT
        with s3_environment(endpoint):       # AWS_* variables for botocore/s3fs, restored afterwards
            make_bucket("runs")              # s3://runs/... now works everywhere in this process

A developer can run one by hand: `.venv/bin/python tests/s3_server.py` prints the variables to export.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from typing import Iterator

TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}  # moto accepts any; nothing real


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (only there: nothing listens on other interfaces); its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextmanager
def s3_environment(endpoint: str) -> Iterator[None]:
    """The AWS variables botocore reads (credentials, region, endpoint) set for this block only;
    s3fs's cached filesystems are dropped on both sides, so none outlives its endpoint."""
    import s3fs

    names = [*TEST_CREDENTIALS, "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"]
    saved = {k: os.environ.get(k) for k in names}
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)
    os.environ.update(TEST_CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_bucket(name: str) -> str:
    """A new bucket (inside s3_environment); its URL."""
    from factory.storage import url_to_fs

    fs, _ = url_to_fs(f"s3://{name}")
    fs.mkdir(name)
    return f"s3://{name}"


if __name__ == "__main__":
    with s3_server() as url:
        print("moto S3 on", url, "- export these, then use s3://BUCKET/... (Ctrl-C stops it):")
        for k, v in {**TEST_CREDENTIALS, "AWS_ENDPOINT_URL": url}.items():
            print(f"export {k}={v}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
