"""Where files live: a local path or an fsspec URL (`s3://`, `gs://`, `memory://` in tests, any
protocol fsspec knows), behind a few functions the rest of the factory calls.

Local paths go straight to the OS (the same calls as before URLs existed, exactly as fast); a
URL goes through `fsspec.core.url_to_fs`, so the storage clients are fsspec's own (s3fs:
`pip install .[s3]`, gcsfs: `.[gcs]`). Credentials come only from each filesystem's standard chain
(environment, profile, instance role): a URL carrying a password is refused, so no secret can reach
a log line, a config.yaml or a manifest; `public_options` strips secret storage options from
anything that is saved.

Object stores have no rename and no append: a whole object is written in one PUT (`put_bytes`),
and a folder that must be complete or absent is written locally and uploaded whole
(`staged_dir`), its marker file last.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator
from urllib.parse import urlsplit

import fsspec
from fsspec.implementations.memory import MemoryFileSystem

from factory.config import ConfigError
from factory.files import atomic_write, file_digest

CHUNK = 1 << 20  # bytes read per call when hashing a remote object
SECRET_OPTIONS = ("key", "secret", "token", "password", "access_key", "secret_key", "session_token",
                  "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "sas_token", "account_key")


def is_url(path: str | os.PathLike) -> bool:
    """True for `proto://...` other than file://; a plain or file:// path is local."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def local(path: str | os.PathLike) -> Path:
    return Path(str(path)[len("file://"):] if str(path).startswith("file://") else path)


def url_to_fs(url: str, **storage_options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it); ConfigError for a URL with a password in it (credentials
    belong in the filesystem's own chain, never in a URL that is logged and saved)."""
    if urlsplit(str(url)).password:
        raise ConfigError(f"{redact(url)}: credentials in a URL are refused; give them through the "
                          "filesystem's standard chain (environment variables, a profile, an instance role)")
    if not str(url).startswith("memory://"):
        # no cached listings: many processes (driver, workers) write one prefix, and a listing
        # cached before another wrote an object would make it look absent (s3fs, gcsfs, adlfs)
        storage_options.setdefault("use_listings_cache", False)
    return fsspec.core.url_to_fs(str(url), **storage_options)


def redact(url: str) -> str:
    """The URL without its user:password part (for messages)."""
    parts = urlsplit(str(url))
    if parts.password is None and parts.username is None:
        return str(url)
    return parts._replace(netloc=parts.hostname or "").geturl()


def public_options(storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """Storage options safe to save: without keys, secrets and tokens."""
    return {k: v for k, v in (storage_options or {}).items() if k.lower() not in SECRET_OPTIONS}


# -- paths --------------------------------------------------------------------------------------

def join(base: str | os.PathLike, *parts: str) -> str:
    """`base/part/...`; a local base joins as pathlib does (the same strings as before URLs)."""
    if not is_url(base):
        return str(Path(local(base), *parts))
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


def parent(path: str | os.PathLike) -> str:
    if not is_url(path):
        return str(local(path).parent)
    head, _, _ = str(path).rstrip("/").rpartition("/")
    return head


def name(path: str | os.PathLike) -> str:
    return str(path).rstrip("/").rpartition("/")[2] if is_url(path) else local(path).name


def as_path(path: str | os.PathLike) -> Path | str:
    """A local path as a Path, a URL as its string: for code that goes on using pathlib locally
    (`Path("s3://b/x")` would collapse the `//`)."""
    return str(path) if is_url(path) else local(path)


def child(base: str | os.PathLike, *parts: str) -> Path | str:
    """`join`, but a local base gives a Path (the same Path as `base / part` before URLs)."""
    return join(base, *parts) if is_url(base) else Path(local(base), *parts)


# -- reading ------------------------------------------------------------------------------------

def open_file(path: str | os.PathLike, mode: str = "rb") -> IO:
    """A file object (reading streams: fsspec reads ahead in blocks; writing: one object at close)."""
    if not is_url(path):
        return open(local(path), mode)
    fs, inner = url_to_fs(str(path))
    if "r" in mode and isinstance(fs, MemoryFileSystem):
        # memory:// hands every reader the one stored BytesIO (one shared position): concurrent
        # readers of an object (ingest decodes, reads the audio and hashes at once) need their own
        data = fs.cat_file(inner)
        return io.BytesIO(data) if "b" in mode else io.StringIO(data.decode("utf-8"))
    return fs.open(inner, mode)


def read_bytes(path: str | os.PathLike) -> bytes:
    if not is_url(path):
        return local(path).read_bytes()
    fs, inner = url_to_fs(str(path))
    return fs.cat_file(inner)


def read_text(path: str | os.PathLike) -> str:
    return read_bytes(path).decode("utf-8")


def exists(path: str | os.PathLike) -> bool:
    if not is_url(path):
        return local(path).exists()
    fs, inner = url_to_fs(str(path))
    return fs.exists(inner)


def isfile(path: str | os.PathLike) -> bool:
    if not is_url(path):
        return local(path).is_file()
    fs, inner = url_to_fs(str(path))
    return fs.isfile(inner)


def isdir(path: str | os.PathLike) -> bool:
    """A folder, or on object storage a prefix with objects under it."""
    if not is_url(path):
        return local(path).is_dir()
    fs, inner = url_to_fs(str(path))
    return fs.isdir(inner)


def size(path: str | os.PathLike) -> int:
    if not is_url(path):
        return local(path).stat().st_size
    fs, inner = url_to_fs(str(path))
    return int(fs.size(inner))


def version(path: str | os.PathLike) -> tuple:
    """What changes when the file is replaced: (mtime_ns, size) locally, (ETag or mtime, size) remotely."""
    if not is_url(path):
        stat = local(path).stat()
        return stat.st_mtime_ns, stat.st_size
    fs, inner = url_to_fs(str(path))
    info = fs.info(inner)
    stamp = next((info[k] for k in ("ETag", "etag", "md5Hash", "LastModified", "mtime", "created") if k in info), None)
    return str(stamp), int(info["size"])


def md5(path: str | os.PathLike) -> str:
    """Hex md5 of the bytes, streamed (an object store's ETag is not an md5 for multipart uploads)."""
    return digest(path, "md5")


def digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of the bytes (any hashlib algorithm), streamed: files.file_digest for a URL."""
    if not is_url(path):
        return file_digest(local(path), algorithm)
    h = hashlib.new(algorithm)
    with open_file(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def glob(pattern: str) -> list[str]:
    """Matching paths, sorted, in the form given (URLs stay URLs)."""
    if not is_url(pattern):
        return sorted(_glob.glob(str(local(pattern))))
    fs, inner = url_to_fs(pattern)
    protocol = pattern.split("://", 1)[0]
    return sorted(f"{protocol}://{p.lstrip('/')}" for p in fs.glob(inner))


def ls(path: str | os.PathLike) -> list[str]:
    """The entries directly under a folder or prefix, sorted ([] when there is none)."""
    if not is_url(path):
        return sorted(str(p) for p in local(path).iterdir()) if local(path).is_dir() else []
    fs, inner = url_to_fs(str(path))
    if not fs.isdir(inner):
        return []
    protocol, own = str(path).split("://", 1)[0], inner.strip("/")
    # an object store may hold a folder marker (`run/`) that lists as the folder itself
    return sorted(f"{protocol}://{p.strip('/')}" for p in fs.ls(inner, detail=False) if p.strip("/") != own)


def find(path: str | os.PathLike) -> list[str]:
    """Every file under a folder or prefix, recursively, sorted ([] when there is none)."""
    if not is_url(path):
        return sorted(str(p) for p in local(path).rglob("*") if p.is_file())
    fs, inner = url_to_fs(str(path))
    protocol = str(path).split("://", 1)[0]
    return sorted(f"{protocol}://{p.lstrip('/')}" for p in fs.find(inner))


@contextmanager
def local_file(path: str | os.PathLike) -> Iterator[Path]:
    """A local path holding the file's bytes, for libraries that only open paths (safetensors):
    the file itself, or a downloaded copy removed afterwards."""
    if not is_url(path):
        yield local(path)
        return
    with tempfile.TemporaryDirectory(prefix="factory-download-") as tmp:
        target = Path(tmp) / name(path)
        fs, inner = url_to_fs(str(path))
        fs.get_file(inner, str(target))
        yield target


# -- added for verify/report on URLs
def forget_listings(path: str | os.PathLike) -> None:
    """Drop every listing the URL's filesystem has cached (s3fs keeps them per process, and drops a
    folder's only, not those below it), so `ls`/`exists`/`size` see what is there now: for checks
    that must not trust an earlier look, e.g. at objects another client wrote or deleted since."""
    if is_url(path):
        url_to_fs(str(path))[0].invalidate_cache()


# -- writing ------------------------------------------------------------------------------------

def put_bytes(path: str | os.PathLike, data: bytes | str) -> None:
    """The whole file in one write: atomic rename locally, one PUT (one object) remotely."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    if not is_url(path):
        local(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(local(path), data)
        return
    fs, inner = url_to_fs(str(path))
    fs.pipe_file(inner, data)


def upload(local_path: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy one local file to `path` as one object (or file)."""
    if not is_url(path):
        local(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local_path, local(path))
        return
    fs, inner = url_to_fs(str(path))
    fs.put_file(str(local_path), inner)


def remove(path: str | os.PathLike) -> None:
    """Delete a file or a whole folder/prefix; nothing there is not an error."""
    if not is_url(path):
        target = local(path)
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        return
    fs, inner = url_to_fs(str(path))
    if fs.exists(inner):
        fs.rm(inner, recursive=True)


@contextmanager
def staged_dir(path: str | os.PathLike, last: str | None = None) -> Iterator[Path]:
    """A local folder to fill; on leaving it becomes `path`, complete or absent. Locally: written
    as `path.partial` and renamed. Remotely (no rename): written to a temporary folder, the old
    objects under `path` removed, then each file uploaded as one object, `last` after the others,
    so a reader that waits for `last` never sees a part."""
    if not is_url(path):
        final = local(path)
        tmp = final.with_name(final.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        yield tmp
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return
    with tempfile.TemporaryDirectory(prefix="factory-staging-") as tmp:
        yield Path(tmp)
        remove(path)
        upload_tree(tmp, path, last=last)


def upload_tree(folder: str | os.PathLike, path: str | os.PathLike, last: str | None = None) -> int:
    """Every file under a local folder to `path`, one object each (`last`-named files after the
    others); how many. E.g. a finished run copied to a bucket for training to read."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == last)  # stable: `last` goes last
    for file in files:
        upload(file, join(path, file.relative_to(folder).as_posix()))
    return len(files)


# -- what is not on URLs yet (model weights, refine, eval, dub, the SyncNet trainer under Ray Train) ---------------------------------------------------------------------

NOT_YET = ("object storage is not supported yet for {what} ({key}={url}); URLs work for runs, clip stores, "
           "inputs, verify, report, refilter and training (pair data read from them, loop.out checkpoints to them): "
           "give a local path")


def refuse_urls(values: dict[str, Any], what: str) -> None:
    """ConfigError naming the first key whose value (or list item) is a URL: for the parts of the
    factory that still write and read local files only, instead of a local folder named `s3:`."""
    for key, value in values.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and is_url(item):
                raise ConfigError(NOT_YET.format(what=what, key=key, url=redact(str(item))))
