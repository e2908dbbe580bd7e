"""A filesystem that counts what a cache reader asks of it (requests, bytes opened), for
the tests and ``jobs/benchmark_stream.py``: on object storage each request is a round trip
(and billed), so the count is the cost that a local disk hides."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs

from unipose_ray.teacher_cache import format as cache_format


@dataclass
class Counts:
    """``requests[method]``: calls made; ``bytes_read``: bytes read from files."""

    requests: Counter = field(default_factory=Counter)
    bytes_read: int = 0

    @property
    def total(self) -> int:
        return sum(self.requests.values())


class CountingHandler(pafs.FileSystemHandler):
    """Forwards every call to ``fs``, counting it in ``counts``."""

    def __init__(self, fs: pafs.FileSystem, counts: Counts):
        self.fs, self.counts = fs, counts

    def _count(self, method: str):
        self.counts.requests[method] += 1
        return getattr(self.fs, method)


    def get_type_name(self) -> str:
        return f"counting+{self.fs.type_name}"

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def get_file_info(self, paths):
        return self._count("get_file_info")(paths)

    def get_file_info_selector(self, selector):
        return self._count("get_file_info")(selector)

    def create_dir(self, path, recursive):
        return self._count("create_dir")(path, recursive=recursive)

    def delete_dir(self, path):
        return self._count("delete_dir")(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        return self._count("delete_dir_contents")(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        return self._count("delete_dir_contents")("/", accept_root_dir=True)

    def delete_file(self, path):
        return self._count("delete_file")(path)

    def move(self, src, dest):
        return self._count("move")(src, dest)

    def copy_file(self, src, dest):
        return self._count("copy_file")(src, dest)

    def open_input_stream(self, path):
        return pa.PythonFile(_CountingReader(self._count("open_input_stream")(path),
                                             self.counts), mode="r")

    def open_input_file(self, path):
        return pa.PythonFile(_CountingReader(self._count("open_input_file")(path),
                                             self.counts), mode="r")

    def open_output_stream(self, path, metadata):
        return self._count("open_output_stream")(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self._count("open_append_stream")(path, metadata=metadata)


class _CountingReader:
    """A file opened for reading whose reads add to ``counts.bytes_read``."""

    def __init__(self, file: pa.NativeFile, counts: Counts):
        self.file, self.counts = file, counts
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(None if size is None or size < 0 else size)
        self.counts.bytes_read += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def size(self) -> int:
        return self.file.size()

    def seekable(self) -> bool:
        return self.file.seekable()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True
        self.file.close()


@contextlib.contextmanager
def counting_cache_requests() -> Iterator[Counts]:
    """Every :class:`CacheStore` made inside the block reads through a counting filesystem
    (in this process only: a Ray actor's reads are not seen)."""
    counts = Counts()
    original = cache_format.filesystem_of

    def counted(uri: str) -> tuple[pafs.FileSystem, str]:
        fs, root = original(uri)
        return pafs.PyFileSystem(CountingHandler(fs, counts)), root

    cache_format.filesystem_of = counted
    try:
        yield counts
    finally:
        cache_format.filesystem_of = original
