"""An archived month on disk: `<class>/<partition>.csv.gz` (PostgreSQL's CSV with a header,
gzip-compressed) and `<class>/<partition>.manifest.json` beside it, which says what the file
holds and the checksums to check it by (of the file, and of the CSV inside).

Files are written under a temporary name, flushed to disk, then renamed: a file with the final
name is always whole. An archive is never overwritten by other rows; a month restored and
archived again with the same rows keeps its file."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT = 1
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Manifest:
    data_class: str
    table: str  # the partitioned table, schema.name
    partition: str
    month: str  # YYYY-MM
    rows: int
    columns: list[str]
    file: str  # the data file's name, beside the manifest
    sha256: str  # of the compressed file
    content_sha256: str  # of the CSV inside
    archived_at: str
    retain_until: str
    # The audit log's chain across the month: the first row's predecessor hash and the last
    # row's number and hash (hex), which the rows left in the database must continue from.
    chain: dict[str, object] = field(default_factory=dict)
    format: int = FORMAT

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls(**json.loads(path.read_text()))

    def dump(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def data_path(directory: Path, data_class: str, partition: str) -> Path:
    return directory / data_class / f"{partition}.csv.gz"


def manifest_path(directory: Path, data_class: str, partition: str) -> Path:
    return directory / data_class / f"{partition}.manifest.json"


def _sync_rename(temporary: Path, final: Path) -> None:
    # Orders and audit rows: readable by the owner and its group only, whatever the umask.
    temporary.chmod(0o640)
    with temporary.open("rb+") as handle:
        os.fsync(handle.fileno())
    temporary.replace(final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class _Hashing(io.RawIOBase):
    """A file that hashes what is written to it: the compressed file's checksum as it is made."""

    def __init__(self, target) -> None:
        self.target, self.digest = target, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        return self.target.write(data)


class ArchiveWriter:
    """Takes the CSV as it comes (COPY ... TO STDOUT) and writes the compressed file."""

    def __init__(self, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.final, self.temporary = final, final.with_name(final.name + ".partial")
        self._raw = self.temporary.open("wb")
        self._hashing = _Hashing(self._raw)
        # Level 6 (zlib's default): a third of the time of gzip's 9, a few percent larger.
        self._gzip = gzip.GzipFile(
            fileobj=self._hashing, mode="wb", compresslevel=6, mtime=0, filename=""
        )
        self.content = hashlib.sha256()

    async def write(self, chunk: bytes) -> None:
        self.content.update(chunk)
        self._gzip.write(chunk)

    def finish(self) -> tuple[str, str]:
        """Closes, syncs and renames the file; returns (sha256 of the file, of its content).
        An archive already there is replaced only by the same bytes: one of another database
        (kept after its data was purged) or of changed rows is never overwritten."""
        self._gzip.close()
        self._raw.close()
        content = self.content.hexdigest()
        if self.final.exists():
            # Compared by content, not bytes: another zlib may compress the same rows otherwise.
            same = content_sha256(self.final) == content
            self.temporary.unlink()
            if not same:
                raise FileExistsError(
                    f"{self.final} already holds other rows (an earlier database's, or the "
                    "month's before it changed): move it aside to archive this month"
                )
            return file_sha256(self.final), content
        _sync_rename(self.temporary, self.final)
        return self._hashing.digest.hexdigest(), content

    def abandon(self) -> None:
        self._gzip.close()
        self._raw.close()
        self.temporary.unlink(missing_ok=True)


def write_manifest(path: Path, manifest: Manifest, *, replace: bool = False) -> None:
    """Writes a manifest; one already there is replaced only with `replace` (this database's
    own, of a month archived again) or when it describes the same rows."""
    if path.exists() and not replace:
        existing = Manifest.load(path)
        if existing.content_sha256 != manifest.content_sha256:
            raise FileExistsError(f"{path} describes other rows: move it aside")
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(manifest.dump())
    _sync_rename(temporary, path)


def unrecorded(directory: Path, known: set[Path]) -> list[Path]:
    """The data files in `directory` that are not in `known`."""
    return sorted(set(directory.glob("*/*.csv.gz")) - known)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in content_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def content_chunks(path: Path) -> Iterator[bytes]:
    with gzip.open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


@dataclass
class Reading:
    """What a second read of a file found."""

    sha256: str
    content_sha256: str
    rows: int
    columns: list[str]


def read_back(path: Path, on_row=None) -> Reading:
    """Reads a file through: its checksums, its columns and rows (each passed to `on_row` as a
    dict of the CSV's text values, when given)."""
    content = hashlib.sha256()

    def text() -> Iterator[str]:
        # newline="": the CSV reader sees a quoted CR LF inside a value as it was written.
        decoder = io.TextIOWrapper(
            _Chunks(content_chunks(path), content), encoding="utf-8", newline=""
        )
        yield from decoder

    reader = csv.reader(text())
    columns = next(reader, [])
    rows = 0
    for values in reader:
        rows += 1
        if on_row is not None:
            on_row(dict(zip(columns, values, strict=True)))
    return Reading(file_sha256(path), content.hexdigest(), rows, columns)


class _Chunks(io.RawIOBase):
    """A readable stream over decompressed chunks, hashing them as they pass."""

    def __init__(self, chunks: Iterator[bytes], digest) -> None:
        self.chunks, self.digest, self.buffer = chunks, digest, b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self.buffer:
            chunk = next(self.chunks, None)
            if chunk is None:
                return 0
            self.digest.update(chunk)
            self.buffer = chunk
        size = min(len(target), len(self.buffer))
        target[:size] = self.buffer[:size]
        self.buffer = self.buffer[size:]
        return size


def copy_verified(source: Path, manifest: Path, destination: Path, sha256: str) -> Path:
    """Copies a data file and its manifest into `destination/<class>/` (synced, renamed), and
    checks the copy's checksum. A file already there with other rows is left as it was, and
    refused. Returns the copy of the data file."""
    folder = destination / source.parent.name
    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    copy = folder / source.name
    if copy.exists() and content_sha256(copy) != content_sha256(source):
        raise FileExistsError(f"{copy} already holds other rows: move it aside")
    for path in (source, manifest):
        temporary = folder / (path.name + ".partial")
        shutil.copyfile(path, temporary)
        _sync_rename(temporary, folder / path.name)
    if file_sha256(copy) != sha256:
        raise OSError(f"the copy {copy} does not match its checksum")
    return copy
