"""melanoma.data.hdf5 on the real ISIC 2024 tile files (tests/data/isic2024) and on files made here."""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma.data.hdf5 import TileFile, read_tile, write_tiles
from melanoma.errors import InputError

DATA = Path(__file__).resolve().parent / "data" / "isic2024"
REAL = [("test-image.hdf5", "test-metadata.csv", 3), ("train-image-first100.hdf5", "train-metadata-first100.csv", 100)]


def _jpeg(side: int = 16, value: int = 100) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (value, 50, 20)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("h5_name,csv_name,n", REAL)
def test_real_files_read_and_decode(h5_name, csv_name, n):
    meta = pd.read_csv(DATA / csv_name)
    with TileFile(DATA / h5_name) as tiles:
        ids = tiles.ids()
        assert len(tiles) == len(ids) == n
        assert sorted(ids) == sorted(meta["isic_id"])  # one tile per metadata row, nothing else
        tiles.require(meta["isic_id"])
        sides = []
        for chunk in tiles.chunks(size=7):
            assert 1 <= len(chunk) <= 7
            for isic_id, data in chunk:
                assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"  # whole JPEGs, end marker kept
                with Image.open(io.BytesIO(data)) as im:
                    im.load()
                    assert im.format == "JPEG" and im.mode == "RGB"
                    sides += list(im.size)
        assert 61 <= min(sides) and max(sides) <= 239  # the README's range of the real tiles


def test_real_test_tile_read_alone_matches_chunks():
    path = DATA / "test-image.hdf5"
    with TileFile(path) as tiles:
        everything = dict(pair for chunk in tiles.chunks(["ISIC_0015729", "ISIC_0015657"], 1) for pair in chunk)
        assert list(everything) == ["ISIC_0015729", "ISIC_0015657"]  # the order asked for
        assert "ISIC_0015740" in tiles and "ISIC_9999999" not in tiles and "." not in tiles
    assert read_tile(path, "ISIC_0015729") == everything["ISIC_0015729"]
    with h5py.File(path, "r") as h5:
        assert bytes(h5["ISIC_0015657"][()]) == everything["ISIC_0015657"]


def test_missing_id_names_file_and_id():
    with TileFile(DATA / "test-image.hdf5") as tiles:
        with pytest.raises(InputError, match=r"test-image\.hdf5: no tile for isic_id 'ISIC_0000001'"):
            tiles.read("ISIC_0000001")
        with pytest.raises(InputError, match=r"no tile for isic_id 'ISIC_0000002' of test-metadata.csv \(2 id"):
            tiles.require(["ISIC_0015657", "ISIC_0000002", "ISIC_0000003"], "test-metadata.csv")
        assert tiles.missing(["ISIC_0000003", "ISIC_0015740"]) == ["ISIC_0000003"]
        with pytest.raises(InputError, match="not a valid id"):
            tiles.read("")


def test_not_hdf5_missing_and_empty(tmp_path):
    csv = DATA / "test-metadata.csv"
    with pytest.raises(InputError, match=r"test-metadata\.csv: not an HDF5 file: expected one dataset per isic_id"):
        TileFile(csv)
    with pytest.raises(InputError, match="nope.hdf5: not found"):
        TileFile(tmp_path / "nope.hdf5")
    with pytest.raises(InputError, match="is not a file"):
        TileFile(tmp_path)
    with h5py.File(tmp_path / "empty.hdf5", "w"):
        pass
    with pytest.raises(InputError, match="empty.hdf5: holds no tiles"):
        TileFile(tmp_path / "empty.hdf5")


@pytest.mark.parametrize("layout", ["group", "array", "integer"])
def test_other_layouts_are_one_line(tmp_path, layout):
    path = tmp_path / f"{layout}.hdf5"
    with h5py.File(path, "w") as h5:
        if layout == "group":
            h5.create_group("images").create_dataset("ISIC_0000001", data=np.bytes_(_jpeg()))
        elif layout == "array":  # decoded pixels instead of JPEG bytes
            h5.create_dataset("ISIC_0000001", data=np.zeros((16, 16, 3), np.uint8))
        else:
            h5.create_dataset("ISIC_0000001", data=7)
    with pytest.raises(InputError) as e:
        TileFile(path)
    message = str(e.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "expected one dataset per isic_id at the root, each a scalar of JPEG bytes" in message


def test_bad_dataset_after_the_first_fails_on_read(tmp_path):
    path = tmp_path / "mixed.hdf5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("ISIC_0000001", data=np.bytes_(_jpeg()))
        h5.create_dataset("ISIC_0000002", data=np.arange(5))
    with TileFile(path) as tiles:
        assert tiles.read("ISIC_0000001") == _jpeg()
        with pytest.raises(InputError, match=r"'ISIC_0000002' holds shape \(5,\) of dtype int64"):
            list(tiles.chunks())


def test_opaque_bytes_are_read_and_a_compound_is_not(tmp_path):
    path = tmp_path / "variants.hdf5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("ISIC_0000001", data=np.void(_jpeg(value=10)))  # as some re-writes of the data store it
        h5.create_dataset("ISIC_0000002", data=np.zeros((), dtype=[("a", "i4"), ("b", "f8")]))
    with TileFile(path) as tiles:
        assert tiles.read("ISIC_0000001") == _jpeg(value=10)
        with pytest.raises(InputError, match="'ISIC_0000002' holds shape"):
            tiles.read("ISIC_0000002")


def test_write_tiles_round_trip_in_the_real_layout(tmp_path):
    items = [(f"ISIC_{i:07d}", _jpeg(8 + i, 10 * i)) for i in range(5)]
    path = tmp_path / "out" / "train-image.hdf5"
    assert write_tiles(path, iter(items)) == 5
    assert sorted(p.name for p in path.parent.iterdir()) == ["train-image.hdf5"]  # no temporary left
    with h5py.File(path, "r") as h5:  # as the competition's: fixed-length bytes scalars at the root
        ds = h5["ISIC_0000003"]
        assert ds.shape == () and ds.dtype.kind == "S" and not h5.attrs.keys()
    with TileFile(path) as tiles:
        assert [pair for chunk in tiles.chunks(size=2) for pair in chunk] == items
    write_tiles(path, [("ISIC_0000009", b"\xff\xd8 ends in NUL \x00\x00")])  # every byte comes back
    assert read_tile(path, "ISIC_0000009") == b"\xff\xd8 ends in NUL \x00\x00"


def test_write_tiles_failure_leaves_nothing_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "tiles.hdf5"
    write_tiles(path, [("ISIC_0000001", _jpeg())])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="given twice"):
        write_tiles(path, [("ISIC_0000002", _jpeg()), ("ISIC_0000002", _jpeg())])
    with pytest.raises(ValueError, match="bad isic_id"):
        write_tiles(path, [("a/b", _jpeg())])
    with pytest.raises(ValueError, match="not non-empty bytes"):
        write_tiles(path, [("ISIC_0000003", b"")])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["tiles.hdf5"]
