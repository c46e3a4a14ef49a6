"""The manifest of a TFRecords folder: one object, read by one function, written by one function.

`prepare`, `synth` and `pseudo` write their shards and then `manifest.json` (last: a folder with one is
complete). Every reader (train, synth, pseudo, export, preview, the extra training sources) goes through
`read_manifest(folder)` once per command and passes the `Manifest` along; every writer builds a `Manifest`
and serialises it with `write_manifest`, so the format is declared here only.

The public Kaggle TFRecords have no manifest.json: their Manifest is built from the file names
(`train07-2182.tfrec`: index, then count), the training files dealt into equal contiguous blocks, one per fold
(15 files and 5 folds give files 0-2 to fold 0, as the public notebooks do). Counts come from the manifest or
the names, never from a pass over the data. Everything goes through tf.io.gfile, so gs:// paths work.

Manifests of earlier versions still load: only `shards` (file, split, fold, count) is required; `train_only`,
`positives`, `source`, `format`, the prepare settings and reports are read when present.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from melanoma import __version__
from melanoma.data.records import VOCABULARIES, check_prepared, parse_shard_name
from melanoma.errors import input_error
from melanoma.files import _json_default

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# `format`: what wrote the folder. Manifests without one are prepare's (or pseudo's, with "kind": "pseudo").
TFRECORDS, SYNTHETIC, PSEUDO, PUBLIC = "melanoma-tfrecords", "melanoma-synthetic", "melanoma-pseudo", "public"
SHARD_KEYS = ("file", "split", "fold", "count", "positives", "train_only", "source")


@dataclass(frozen=True)
class Shard:
    path: str
    split: str
    fold: int  # -1 for test shards and for external training data (in every fold's training set)
    count: int
    train_only: bool = False  # external data or upsampled copies: never validated, never in the OOF
    positives: int | None = None  # malignant records, when the manifest says (spares reading the shard)
    source: str = ""  # tag of extra training data: "pseudo", "synthetic:K" (trains fold K only); "" = untagged
    # what else the writer recorded (prepare's resume check: key, bytes, sha256), kept as written
    details: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)

    @classmethod
    def from_entry(cls, folder: str, entry: Mapping[str, Any]) -> Shard:
        """A shard from its manifest entry (a dict with `file` relative to `folder`)."""
        positives = entry.get("positives")
        return cls(f"{folder}/{entry['file']}", str(entry["split"]), int(entry["fold"]), int(entry["count"]),
                   bool(entry.get("train_only", False)), int(positives) if positives is not None else None,
                   str(entry.get("source") or ""), {k: v for k, v in entry.items() if k not in SHARD_KEYS})


@dataclass(frozen=True)
class Manifest:
    """A TFRecords folder: its shards and what they were made with."""

    folder: str  # where the shards are (not serialised: shard files are relative to it)
    shards: tuple[Shard, ...]
    image_size: int | None  # stored side length when known; None (public layout) = resize always
    n_folds: int  # 0: unknown (a public folder read without a fold count)
    format: str = TFRECORDS
    version: str | None = __version__  # of the melanoma that wrote it (None: too old to say)
    vocab: Mapping[str, list[str]] = field(default_factory=dict)  # codes -> names; {} = the public codes
    # prepare's settings and reports (None where the writer has none: synth, pseudo, the public layout)
    resize: str | None = None
    quality: int | None = None
    lesion: Mapping[str, Any] | None = None  # the lesion step export and predict must repeat
    external: tuple[Mapping[str, Any], ...] | None = None  # external data sets mixed in: folder, source, images
    leakage: Mapping[str, Any] | None = None  # the duplicate and quality report
    skipped: tuple[Mapping[str, Any], ...] | None = None  # bad images left out (on_bad_image skip)
    details: Mapping[str, Any] = field(default_factory=dict)  # all else the writer recorded, kept as written

    def __post_init__(self):
        object.__setattr__(self, "folder", str(self.folder).rstrip("/") or "/")
        object.__setattr__(self, "shards", tuple(self.shards))
        for name in ("external", "skipped"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def public(self) -> bool:
        """No manifest.json: the public Kaggle TFRecords, described by their file names."""
        return self.format == PUBLIC

    def train(self, exclude: list[int] | None = None) -> list[Shard]:
        """The training pool when the folds in `exclude` are held out (train-only shards included)."""
        return [s for s in self.shards if s.split == "train" and (exclude is None or s.fold not in exclude)]

    def validation(self, folds: list[int] | None = None) -> list[Shard]:
        """Shards of the competition's own training images in `folds` (all folds by default): what OOF covers."""
        return [s for s in self.shards if s.split == "train" and not s.train_only and s.fold >= 0
                and (folds is None or s.fold in folds)]

    def test(self) -> list[Shard]:
        return [s for s in self.shards if s.split == "test"]

    def vocabulary(self, name: str) -> list[str]:
        """Names by code of a categorical field: this folder's vocabulary, else the public TFRecords'."""
        return list(self.vocab.get(name) or VOCABULARIES[name])

    def file_of(self, shard: Shard) -> str:
        """The shard's file relative to the folder, as the manifest lists it."""
        prefix = self.folder.rstrip("/") + "/"
        if not shard.path.startswith(prefix):
            raise ValueError(f"shard {shard.path} is not inside {self.folder}")
        return shard.path[len(prefix):]

    def entry(self, shard: Shard) -> dict[str, Any]:
        """The shard as manifest.json lists it."""
        e = {"file": self.file_of(shard), "split": shard.split, "fold": shard.fold, "count": shard.count}
        if shard.positives is not None:
            e["positives"] = shard.positives
        e["train_only"] = shard.train_only
        if shard.source:
            e["source"] = shard.source
        return {**e, **shard.details}

    def to_dict(self) -> dict[str, Any]:
        """The manifest.json content (plain JSON types)."""
        doc: dict[str, Any] = {"format": self.format, "version": self.version, "image_size": self.image_size,
                               "resize": self.resize, "quality": self.quality, "lesion": self.lesion,
                               "n_folds": self.n_folds}
        doc = {k: v for k, v in doc.items() if v is not None or k == "image_size"}
        doc.update(self.details)
        for name in ("external", "leakage", "skipped"):
            if getattr(self, name) is not None:
                doc[name] = getattr(self, name)
        doc["shards"] = [self.entry(s) for s in self.shards]
        if self.vocab:
            doc["vocab"] = self.vocab
        return json.loads(json.dumps(doc, default=_json_default))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], folder: str) -> Manifest:
        """A Manifest from manifest.json's content, of this version or an earlier one."""
        folder = str(folder).rstrip("/") or "/"
        known = {f.name for f in dataclasses.fields(cls)}
        fmt = doc.get("format") or (PSEUDO if doc.get("kind") == "pseudo" else TFRECORDS)
        size = doc.get("image_size")
        typed = {k: doc[k] for k in ("vocab", "resize", "quality", "lesion", "external", "leakage", "skipped")
                 if doc.get(k) is not None}
        return cls(folder, tuple(Shard.from_entry(folder, e) for e in doc["shards"]),
                   int(size) if size is not None else None, int(doc.get("n_folds") or 0), fmt, doc.get("version"),
                   details={k: v for k, v in doc.items() if k not in known}, **typed)


def load_manifest(folder: str) -> Manifest | None:
    """FOLDER/manifest.json as a Manifest; None when there is none. A damaged one is a one-line error."""
    import tensorflow as tf

    folder = str(folder).rstrip("/") or "/"
    path = f"{folder}/{MANIFEST}"
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as f:
            doc = json.load(f)
        if not isinstance(doc, dict) or not isinstance(doc.get("shards"), list):
            raise ValueError("no list of shards")
        return Manifest.from_dict(doc, folder)
    except (ValueError, KeyError, TypeError) as e:  # json's errors are ValueErrors
        what = f"{type(e).__name__}: {e}" if not isinstance(e, KeyError) else f"a shard lacks {e}"
        raise input_error(path, f"damaged manifest ({' '.join(what.split())[:120]}): re-run the command that "
                                "wrote this folder (`melanoma prepare`, `synth` or `pseudo`)") from None


def recorded_competition(folder: str | None) -> str | None:
    """The competition prepare recorded in FOLDER/manifest.json (None: no folder, no manifest, or an older one)."""
    found = load_manifest(str(folder)) if folder else None
    value = found.details.get("competition") if found is not None else None
    return value if isinstance(value, str) else None


def read_manifest(folder: str, n_folds: int | None = None) -> Manifest:
    """The Manifest of a TFRecords folder: its manifest.json (every listed shard must exist), else the public
    layout from the file names, its training files dealt into `n_folds` folds (None: all in fold -1)."""
    import tensorflow as tf

    folder = str(folder).rstrip("/") or "/"
    found = load_manifest(folder)
    if found is None:
        check_prepared(folder)  # an unfinished prepare folder would train on partial shards
        return public_manifest(folder, n_folds)
    missing = [s.path for s in found.shards if not tf.io.gfile.exists(s.path)]
    if missing:
        raise input_error(f"{folder}/{MANIFEST}", f"lists {missing[0]}, which does not exist; re-run the command "
                                                  "that wrote this folder")
    return found


def public_manifest(folder: str, n_folds: int | None) -> Manifest:
    """The public Kaggle layout: shards from the names `train07-2182.tfrec` (split, index, count)."""
    import tensorflow as tf

    named = sorted((n, p) for p in tf.io.gfile.glob(f"{folder}/*.tfrec") if (n := parse_shard_name(p)) is not None)
    train = [(n, p) for n, p in named if n[0] == "train"]
    if not train:
        raise input_error(folder, f"no {MANIFEST} and no train*-COUNT.tfrec files: not a TFRecords folder "
                                  "(run `melanoma prepare`, or give the folder that holds the shards)")
    if n_folds and len(train) % n_folds:
        raise input_error(folder, f"{len(train)} training files cannot be split evenly into {n_folds} folds "
                                  "(set n_folds to a divisor, or use `melanoma prepare`)")
    per_fold = len(train) // n_folds if n_folds else 0
    shards = [Shard(p, "train", i // per_fold if per_fold else -1, n[2]) for i, (n, p) in enumerate(train)]
    shards += [Shard(p, "test", -1, n[2]) for n, p in named if n[0] == "test"]
    if n_folds:
        log.info("%s: no manifest, %d training files read as %d folds of %d files (public Kaggle layout)",
                 folder, len(train), n_folds, per_fold)
    return Manifest(folder, tuple(shards), None, n_folds or 0, PUBLIC, None)


def write_manifest(manifest: Manifest) -> str:
    """Write FOLDER/manifest.json atomically (a temporary name, then a rename), locally or on gs://.
    Writers call it last: the manifest marks the folder complete. Returns its path."""
    import tensorflow as tf

    if manifest.public:
        raise ValueError("the public layout has no manifest to write")
    path, tmp = f"{manifest.folder}/{MANIFEST}", f"{manifest.folder}/.{MANIFEST}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(manifest.to_dict(), indent=2) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return path

