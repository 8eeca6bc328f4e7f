"""Key files that are re-read when replaced, so a key rotation needs no restart."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

# How often a key file's metadata is looked at for a change, at most.
KEY_FILE_CHECK_S = 1.0
T = TypeVar("T")


class KeyFileError(Exception):
    """A key file is missing, unreadable or does not hold the key(s) it should."""


class WatchedFile(Generic[T]):
    """A file parsed once and again whenever it is replaced (new inode, size or mtime)."""

    def __init__(self, path: str, parse: Callable[[bytes], T]) -> None:
        self.path = path
        self._parse = parse
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self._value: T = self._load()  # a bad file at start is a configuration error

    def _read(self) -> tuple[tuple[int, int, int], bytes]:
        try:
            with open(self.path, "rb") as handle:
                st = os.fstat(handle.fileno())
                return (st.st_ino, st.st_size, st.st_mtime_ns), handle.read()
        except OSError as exc:
            raise KeyFileError(f"{self.path} cannot be read: {exc.strerror}") from None

    def _load(self) -> T:
        stamp, data = self._read()
        try:
            value = self._parse(data)
        except KeyFileError as exc:
            raise KeyFileError(f"{self.path}: {exc}") from None
        self._stamp = stamp
        self._checked_at = time.monotonic()
        return value

    def get(self) -> T:
        """The parsed file, re-read if it was replaced (looked at once a second at most, so a
        flood of tokens with unknown key ids costs nothing). A replacement that does not parse
        is ignored: the last good keys stay in force."""
        now = time.monotonic()
        if now - self._checked_at < KEY_FILE_CHECK_S:
            return self._value
        with self._lock:
            if now - self._checked_at < KEY_FILE_CHECK_S:
                return self._value
            self._checked_at = now
            try:
                st = os.stat(self.path)
                if (st.st_ino, st.st_size, st.st_mtime_ns) != self._stamp:
                    self._value = self._load()
            except (OSError, KeyFileError):
                pass
            return self._value
