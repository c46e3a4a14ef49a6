"""The one Manifest of a TFRecords folder: round trip, earlier formats, the public layout, one-line errors, and
no module but data/manifest.py parsing manifest.json itself."""

import ast
import json
from pathlib import Path

import pytest
from helpers.paths import ROOT

from melanoma.cli import main
from melanoma.config import Config, apply_overrides
from melanoma.data.manifest import (
    MANIFEST,
    PSEUDO,
    PUBLIC,
    SYNTHETIC,
    TFRECORDS,
    Manifest,
    Shard,
    load_manifest,
    read_manifest,
    write_manifest,
)
from melanoma.data.reader import find_shards
from melanoma.data.records import VOCABULARIES
from melanoma.errors import InputError
from melanoma.image.heads import labels_for

SRC = ROOT / "src" / "melanoma"


def touch(folder: Path, *names: str) -> Path:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    return folder


def test_round_trip_keeps_every_field(tmp_path):
    folder = str(touch(tmp_path, "train00-3.tfrec", "train01-2.tfrec", "fold1/synth1-00-2.tfrec", "test00-4.tfrec"))
    shards = (Shard(f"{folder}/train00-3.tfrec", "train", 0, 3, positives=1, details={"sha256": "ab", "bytes": 9}),
              Shard(f"{folder}/train01-2.tfrec", "train", -1, 2, True, 2, "external"),
              Shard(f"{folder}/fold1/synth1-00-2.tfrec", "train", 1, 2, True, 2, "synthetic:1"),
              Shard(f"{folder}/test00-4.tfrec", "test", -1, 4, positives=0))
    m = Manifest(folder, shards, 32, 2, TFRECORDS, vocab={"diagnosis": ["unknown", "melanoma", "df"]},
                 resize="crop", quality=95, lesion={"mode": "none"}, external=({"folder": "x", "images": 2},),
                 leakage={"duplicates": {"within_train": 1}}, skipped=({"image_name": "ISIC_1", "error": "x"},),
                 details={"seed": 7, "counts": {"train": 3, "test": 4}})
    path = write_manifest(m)
    assert path == f"{folder}/{MANIFEST}" and not list(tmp_path.glob(".*.tmp"))
    back = read_manifest(folder)
    assert back == m and back.to_dict() == m.to_dict()
    assert [s.details for s in back.shards] == [s.details for s in shards]  # (details do not compare)
    doc = json.loads(Path(path).read_text())
    assert [s["file"] for s in doc["shards"]] == ["train00-3.tfrec", "train01-2.tfrec", "fold1/synth1-00-2.tfrec",
                                                  "test00-4.tfrec"]
    assert doc["shards"][0]["sha256"] == "ab" and doc["seed"] == 7 and doc["format"] == TFRECORDS
    assert [s.path for s in back.validation()] == [shards[0].path] and back.test() == [shards[3]]
    assert back.vocabulary("diagnosis") == ["unknown", "melanoma", "df"]
    assert back.vocabulary("sex") == list(VOCABULARIES["sex"])  # none recorded: the public codes


def test_manifests_of_earlier_versions_still_load(tmp_path):
    # the first prepare's manifest (2026-11-21): no train_only, positives, source, lesion, external or reports
    v1 = tmp_path / "v1"
    touch(v1, "train00-3.tfrec", "train01-3.tfrec", "test00-2.tfrec")
    (v1 / MANIFEST).write_text(json.dumps({
        "format": "melanoma-tfrecords", "version": "0.0.1", "image_size": 64, "resize": "crop", "quality": 90,
        "n_folds": 2, "seed": 42, "counts": {"train": 6, "test": 2}, "folds": {"0": {"images": 3}},
        "shards": [{"file": "train00-3.tfrec", "split": "train", "fold": 0, "count": 3},
                   {"file": "train01-3.tfrec", "split": "train", "fold": 1, "count": 3},
                   {"file": "test00-2.tfrec", "split": "test", "fold": -1, "count": 2}],
        "schema": {"train": {}, "test": {}}, "vocab": {"diagnosis": ["unknown", "melanoma"]}, "seconds": 1.0}))
    m = find_shards(str(v1), 5)  # the manifest's n_folds wins over the caller's
    assert (m.n_folds, m.image_size, m.version, m.format, m.lesion, m.skipped) == (2, 64, "0.0.1", TFRECORDS,
                                                                                  None, None)
    assert [(s.fold, s.count, s.train_only, s.positives, s.source) for s in m.train()] == [(0, 3, False, None, ""),
                                                                                           (1, 3, False, None, "")]
    assert m.details["counts"] == {"train": 6, "test": 2} and m.vocabulary("diagnosis") == ["unknown", "melanoma"]
    assert "lesion" not in m.to_dict()  # a manifest read and written again keeps its shape

    # hand-written, before `format` existed; and an early pseudo folder (its `kind`, no `format`)
    bare = touch(tmp_path / "bare", "train00-5.tfrec")
    (bare / MANIFEST).write_text(json.dumps({"image_size": 32, "n_folds": 1, "shards": [
        {"file": "train00-5.tfrec", "split": "train", "fold": 0, "count": 5}]}))
    assert find_shards(str(bare)).validation()[0].count == 5
    pseudo = touch(tmp_path / "pseudo", "train00-5.tfrec")
    (pseudo / MANIFEST).write_text(json.dumps({"image_size": None, "n_folds": 5, "kind": "pseudo", "shards": [
        {"file": "train00-5.tfrec", "split": "train", "fold": -1, "count": 5, "train_only": True,
         "source": "pseudo", "positives": 1}]}))
    assert read_manifest(str(pseudo)).format == PSEUDO
    with pytest.raises(InputError, match="melanoma pseudo.*train.sources.pseudo"):  # never read as competition folds
        find_shards(str(pseudo))


def test_public_layout_from_file_names(tmp_path):
    touch(tmp_path, *[f"train{i:02d}-10.tfrec" for i in range(4)], "test00-7.tfrec", "notes.tfrec")
    m = read_manifest(str(tmp_path), 2)
    assert m.public and m.format == PUBLIC and m.image_size is None and m.n_folds == 2
    assert [(Path(s.path).name, s.fold) for s in m.train()] == [("train00-10.tfrec", 0), ("train01-10.tfrec", 0),
                                                                ("train02-10.tfrec", 1), ("train03-10.tfrec", 1)]
    assert [s.count for s in m.test()] == [7] and m.vocabulary("diagnosis") == list(VOCABULARIES["diagnosis"])
    assert {s.fold for s in read_manifest(str(tmp_path)).train()} == {-1}  # no fold count: extra data
    with pytest.raises(InputError, match="4 training files cannot be split evenly into 3 folds"):
        read_manifest(str(tmp_path), 3)
    with pytest.raises(ValueError, match="public layout"):
        write_manifest(m)


@pytest.mark.parametrize("text, problem", [("{not json", "damaged manifest"), ('{"n_folds": 2}', "no list of shards"),
                                           ('{"shards": [{"file": "a.tfrec"}]}', "lacks 'split'")])
def test_damaged_manifest_is_one_line_naming_the_file_and_the_fix(tmp_path, text, problem):
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(InputError, match=problem) as e:
        load_manifest(str(tmp_path))
    assert str(tmp_path / MANIFEST) in str(e.value) and "re-run" in str(e.value) and "\n" not in str(e.value)


def test_missing_shard_unfinished_prepare_and_empty_folder_are_input_errors(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"image_size": 32, "n_folds": 1, "shards": [
        {"file": "train00-5.tfrec", "split": "train", "fold": 0, "count": 5}]}))
    with pytest.raises(InputError, match="train00-5.tfrec, which does not exist"):
        read_manifest(str(tmp_path))
    assert load_manifest(str(tmp_path)).shards[0].count == 5  # prepare's resume reads it without the check
    unfinished = tmp_path / "unfinished"
    touch(unfinished, "train00-5.tfrec", ".prepare-work/plan.json")
    with pytest.raises(InputError, match="interrupted"):
        read_manifest(str(unfinished), 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no manifest.json and no train"):
        read_manifest(str(tmp_path / "empty"))


def test_cli_names_the_damaged_manifest_in_one_line(tmp_path, capsys):
    (tmp_path / MANIFEST).write_text("{truncated")
    code = main(["augment-preview", "--tfrecords", str(tmp_path), "--out", str(tmp_path / "x.png")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("melanoma: error:")]
    assert code == 2 and len(lines) == 1 and str(tmp_path / MANIFEST) in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_diagnosis_head_reads_the_vocabulary_from_the_manifest(tmp_path):
    tcfg = apply_overrides(Config(), {"train.head": "diagnosis", "train.class_map": "isic2017"}).train
    own = Manifest(str(tmp_path), (), 32, 1, vocab={"diagnosis": ["melanoma", "nevus"]})
    labels = labels_for(tcfg, own)
    assert labels.classes([0, 1], [1, 0]).tolist() == [labels.cmap.melanoma, labels.cmap.classes.index("nevus")]
    public = labels_for(tcfg, Manifest(str(tmp_path), (), None, 1, PUBLIC))
    assert len(public.table) == len(VOCABULARIES["diagnosis"]) + 1
    assert labels_for(Config().train, own) is None  # the binary head


def _parses_manifest(tree: ast.AST) -> list[str]:
    """Functions that both read JSON (json.load(s), read_json) and name manifest.json (or MANIFEST, INDEX)."""
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        calls = {ast.unparse(n.func) for n in ast.walk(fn) if isinstance(n, ast.Call)}
        names = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
        doc = fn.body[0].value if ast.get_docstring(fn) is not None else None
        strings = " ".join(n.value for n in ast.walk(fn) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                           and n is not doc)
        reads = calls & {"json.load", "json.loads", "read_json"}
        if reads and ("manifest.json" in strings or names & {"MANIFEST", "INDEX"}):
            found.append(fn.name)
    return found


def test_only_data_manifest_parses_manifest_json():
    offenders = {str(p.relative_to(SRC)): f for p in sorted(SRC.rglob("*.py"))
                 if p.name != "manifest.py" and (f := _parses_manifest(ast.parse(p.read_text())))}
    assert offenders == {}
    before = ("def diagnosis_vocab(d):\n    path = f'{d}/manifest.json'\n"
              "    with open(path) as f:\n        return json.load(f)['vocab']\n")
    assert _parses_manifest(ast.parse(before)) == ["diagnosis_vocab"]  # the check catches the former readers


def test_synth_index_is_a_manifest_rebuilt_fold_by_fold(tmp_path):
    from melanoma.image.sources import sources_from_folder
    from melanoma.synth.writer import read_index, synthetic_tag, update_index

    header = {"tfrecords": "rec", "image_size": 32, "n_folds": 3, "generator": "unet", "naming": "synth_<k>_..."}
    for fold in (2, 0):
        name = f"fold{fold}/synth{fold}-00-4.tfrec"
        touch(tmp_path, name)
        update_index(tmp_path, header, fold, {"images": 4, "shards": [
            {"file": name, "split": "train", "fold": fold, "count": 4, "positives": 4, "train_only": True,
             "source": synthetic_tag(fold)}]})
    m = read_manifest(str(tmp_path))
    assert m.format == SYNTHETIC and (m.image_size, m.n_folds) == (32, 3) and m.details["generator"] == "unet"
    assert [(s.fold, s.source) for s in m.shards] == [(0, "synthetic:0"), (2, "synthetic:2")]  # fold order
    assert read_index(tmp_path)["folds"]["2"]["images"] == 4
    assert sorted(next(iter(s.folds)) for s in sources_from_folder("synthetic", str(tmp_path))) == [0, 2]
    with pytest.raises(InputError, match="melanoma synth.*train.sources.synthetic"):
        find_shards(str(tmp_path))
