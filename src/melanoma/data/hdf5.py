"""ISIC 2024 (SLICE-3D) image tiles in HDF5: `train-image.hdf5` / `test-image.hdf5`.

The competition's layout: one dataset per `isic_id` at the root of the file, each a scalar of JPEG bytes
(fixed-length `numpy.bytes_`, e.g. dtype `|S3318`), no groups, no attributes. The real training file is about
1.3 GB for 401,059 tiles, so nothing here loads the file: `TileFile` opens it once and reads one dataset at a
time (bench/isic2024.py measures the rate of a streamed pass).

    with TileFile("train-image.hdf5") as tiles:
        ids = tiles.ids()                       # in the file's order (HDF5 keeps root links sorted by name)
        jpeg = tiles.read("ISIC_0015670")       # bytes
        for chunk in tiles.chunks(ids, 1024):   # [(isic_id, bytes), ...]
            ...

Errors a user can fix are one line naming the file (melanoma.errors.input_error): a missing file, a file that
is not HDF5, an HDF5 file of another layout (a group, an array, a non-bytes dataset), an id it lacks.
`write_tiles` writes the same layout atomically (temporary name, then rename); the demo generator and the
tests use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

from melanoma.errors import input_error
from melanoma.files import atomic_path

LAYOUT = "one dataset per isic_id at the root, each a scalar of JPEG bytes (the ISIC 2024 train-image.hdf5 layout)"


class TileFile:
    """Read-only access to an ISIC 2024 tile file; use as a context manager (or call close())."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise input_error(self.path, "not found" if not self.path.exists() else "is not a file")
        if not h5py.is_hdf5(self.path):
            raise input_error(self.path, f"not an HDF5 file: expected {LAYOUT}")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise input_error(self.path, f"cannot be opened as HDF5: {' '.join(str(e).split())}") from None
        self._ids: list[str] | None = None
        first = next(iter(self._h5), None)
        if first is None:
            self.close()
            raise input_error(self.path, f"holds no tiles: expected {LAYOUT}")
        try:
            self._dataset(first)  # one probe: a file of another layout fails here, not 300,000 reads later
        except Exception:
            self.close()
            raise

    def __enter__(self) -> TileFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_h5", None) is not None:
            self._h5.close()
            self._h5 = None

    def ids(self) -> list[str]:
        """Every isic_id in the file, in the file's order (listed once, then cached)."""
        if self._ids is None:
            self._ids = list(self._h5.keys())
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._h5)

    def __contains__(self, isic_id: object) -> bool:
        return _valid_id(isic_id) and isinstance(self._h5.get(isic_id), h5py.Dataset)

    def read(self, isic_id: str) -> bytes:
        """The JPEG bytes of one tile."""
        # h5py's low-level calls: about 2.5x faster per tile than h5[isic_id][()] (no Dataset object, no
        # conversion), and the raw buffer keeps every byte (numpy.bytes_ would drop trailing NULs).
        try:
            dsid = h5py.h5d.open(self._h5.id, isic_id.encode()) if _valid_id(isic_id) else None
        except (KeyError, ValueError, OSError, AttributeError):
            dsid = None
        if dsid is None or dsid.shape != () or not _bytes_dtype(dsid.dtype):
            dsid = self._dataset(isic_id).id  # raises the one-line error; returns only if the checks disagree
        buf = np.empty((), dtype=dsid.dtype)
        dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, buf)
        return buf.tobytes()

    def chunks(self, ids: Sequence[str] | None = None, size: int = 1024) -> Iterator[list[tuple[str, bytes]]]:
        """(isic_id, JPEG bytes) pairs, `size` at a time, for `ids` (default: every id, in the file's order).
        Only one chunk is in memory at a time."""
        if size < 1:
            raise ValueError(f"chunk size must be at least 1, got {size}")
        ids = self.ids() if ids is None else ids
        for start in range(0, len(ids), size):
            yield [(i, self.read(i)) for i in ids[start:start + size]]

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The ids (for example a metadata file's isic_id column) that have no tile here, in the given order."""
        present = set(self.ids())
        return [i for i in ids if i not in present]

    def require(self, ids: Iterable[str], what: str = "the metadata") -> None:
        """Stop with one line when any of `ids` has no tile, naming the first and how many."""
        lost = self.missing(ids)
        if lost:
            raise input_error(self.path, f"no tile for isic_id {lost[0]!r} of {what} ({len(lost)} id(s) of "
                                         f"{what} missing from this file): is it the matching image file?")

    def _dataset(self, isic_id: str) -> h5py.Dataset:
        if self._h5 is None:
            raise ValueError(f"{self.path} is closed")
        if not _valid_id(isic_id):
            raise input_error(self.path, f"no tile for isic_id {isic_id!r}: not a valid id")
        try:
            obj = self._h5.get(isic_id)
        except (KeyError, OSError, ValueError):
            obj = None
        if obj is None:
            raise input_error(self.path, f"no tile for isic_id {isic_id!r} ({len(self)} tiles in the file)")
        if not isinstance(obj, h5py.Dataset):
            raise input_error(self.path, f"{isic_id!r} is a {type(obj).__name__}, not a dataset: expected {LAYOUT}")
        if obj.shape != () or not _bytes_dtype(obj.dtype):
            raise input_error(self.path, f"{isic_id!r} holds shape {obj.shape} of dtype {obj.dtype}: expected "
                                         f"{LAYOUT}")
        return obj


def _valid_id(isic_id: object) -> bool:
    """A name that can only be a dataset at the root: not empty, no '/', not '.' or '..' (HDF5 path syntax)."""
    return isinstance(isic_id, str) and isic_id not in ("", ".", "..") and "/" not in isic_id


def _bytes_dtype(dtype: np.dtype) -> bool:
    """Fixed-length bytes (the competition's) or opaque bytes; variable-length strings cannot hold a JPEG (HDF5
    refuses their NUL bytes) and a compound type is a table, not an image."""
    return dtype.kind == "S" or (dtype.kind == "V" and dtype.fields is None and dtype.subdtype is None)


def read_tile(path: str | Path, isic_id: str) -> bytes:
    """One tile's JPEG bytes (opens and closes the file: for many tiles use TileFile)."""
    with TileFile(path) as tiles:
        return tiles.read(isic_id)


def write_tiles(path: str | Path, items: Iterable[tuple[str, bytes]]) -> int:
    """Write (isic_id, JPEG bytes) pairs in the competition's layout; returns the number written.

    The file appears only complete (written to a temporary name beside `path`, then renamed). Ids must be
    unique, non-empty, free of '/' and not '.' or '..'; data must be non-empty bytes. Stored as fixed-length
    bytes, like the real files (TileFile.read returns every byte of them).
    """
    path = Path(path)
    seen: set[str] = set()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for isic_id, data in items:
            if not _valid_id(isic_id):
                raise ValueError(f"{path}: bad isic_id {isic_id!r} (non-empty, without '/')")
            if isic_id in seen:
                raise ValueError(f"{path}: isic_id {isic_id!r} given twice")
            if not isinstance(data, (bytes, bytearray)) or not data:
                raise ValueError(f"{path}: tile {isic_id!r} is not non-empty bytes")
            seen.add(isic_id)
            h5.create_dataset(isic_id, data=np.bytes_(bytes(data)))
    return len(seen)


# One image of a tile file as `prepare` and `check` list it beside JPEG paths: "<file.hdf5>::<isic_id>".
TILE_SEP = "::"
_open_files: dict[str, TileFile] = {}


def tile_source(path: str | Path, isic_id: str) -> str:
    return f"{path}{TILE_SEP}{isic_id}"


def split_tile_source(source: str) -> tuple[str, str] | None:
    """(file, isic_id) of a tile source; None for a plain file path."""
    head, sep, tail = str(source).rpartition(TILE_SEP)
    return (head, tail) if sep and head.endswith((".hdf5", ".h5")) else None


def read_source(source: str) -> str | bytes:
    """A JPEG path as it is; a tile's JPEG bytes, from its file opened once per process (a worker of prepare
    reads thousands of tiles one at a time; opening the file for each would cost more than the decode)."""
    parts = split_tile_source(source)
    if parts is None:
        return source
    path, isic_id = parts
    if path not in _open_files:
        _open_files[path] = TileFile(path)
    return _open_files[path].read(isic_id)


def source_identity(source: str) -> list:
    """What makes a cached decode of a tile stale: its file's size and modification time (per file, not per
    tile: a rewritten file redoes its chunks)."""
    parts = split_tile_source(source)
    st = Path(parts[0] if parts else source).stat()
    return [st.st_size, st.st_mtime_ns]
