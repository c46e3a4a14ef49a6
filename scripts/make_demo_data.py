"""Convert the shipped ISIC Archive thumbnails into the competition layout, for a small offline demo.

Source (read-only), default `../shared/data/isic_archive_thumbs` next to the repository:
    images/ISIC_xxxxxxx.jpg (+ a .json each, not copied), labels.csv, LICENSE.txt, ATTRIBUTION.txt

Output, default `<repo>/data/demo`:
    train.csv              image_name, patient_id, sex, age_approx, anatom_site_general_challenge,
                           diagnosis, benign_malignant, target
    test.csv               image_name, patient_id, sex, age_approx, anatom_site_general_challenge
    sample_submission.csv  image_name, target (0), in test.csv order
    test_labels.csv        image_name, target of the held-out test images
    jpeg/train/*.jpg, jpeg/test/*.jpg   byte-for-byte copies of the source JPEGs
    LICENSE.txt, ATTRIBUTION.txt, README.md

Degenerate images (vertical colour stripes, a single colour, no detail: `melanoma.data.images.degenerate`) are
left out: they are no dermoscopy. The split is stratified on target. patient_id and
anatom_site_general_challenge are written empty: the source has
neither, and the pipeline reads an empty patient id as one patient per image and an empty site as missing.
Everything is written into a temporary sibling folder that is renamed into place only once it is complete.

    python scripts/make_demo_data.py [--src DIR] [--out DIR] [--test-size 0.2] [--seed 42]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

REPO = Path(__file__).resolve().parents[1]
try:
    from melanoma.errors import MelanomaError, input_error
    from melanoma.data.images import degenerate, view_of
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO / "src"))
    from melanoma.errors import MelanomaError, input_error
    from melanoma.data.images import degenerate, view_of

DEFAULT_SRC = REPO.parent / "shared" / "data" / "isic_archive_thumbs"
DEFAULT_OUT = REPO / "data" / "demo"

LABEL_COLUMNS = ("image_name", "benign_malignant", "target", "diagnosis", "age_approx", "sex")
TRAIN_COLUMNS = ("image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
                 "diagnosis", "benign_malignant", "target")
TEST_COLUMNS = ("image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge")
LICENSE_FILES = ("LICENSE.txt", "ATTRIBUTION.txt")
# Everything this script writes; an existing --out holding anything else is not replaced.
OUTPUT_NAMES = frozenset({"train.csv", "test.csv", "sample_submission.csv", "test_labels.csv", "jpeg",
                          "README.md", *LICENSE_FILES})


def _line(i: int) -> int:
    """File line of data row i (the header is line 1)."""
    return int(i) + 2


def load_labels(src: str | Path) -> pd.DataFrame:
    """Read and validate `<src>/labels.csv`; every listed image must have `<src>/images/<name>.jpg`.

    Returns image_name, benign_malignant, diagnosis, sex (string, lower-cased, <NA> when empty),
    age_approx (float64, NaN when empty) and target (int64, 0/1), in file order.
    """
    src = Path(src)
    path = src / "labels.csv"
    if not path.is_file():
        raise input_error(path, "file not found")
    for name in LICENSE_FILES:
        if not (src / name).is_file():
            raise input_error(src / name, "file not found (the licence files must travel with the images)")
    try:
        raw = pd.read_csv(path, dtype="string", keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise input_error(path, f"not a readable CSV: {e}") from None
    for col in LABEL_COLUMNS:
        if col not in raw.columns:
            raise input_error(path, f"missing column '{col}' (columns: {', '.join(map(str, raw.columns))})", 1)
    if raw.empty:
        raise input_error(path, "no rows")

    names = raw["image_name"].str.strip()
    for i in np.flatnonzero((names == "").to_numpy()):
        raise input_error(path, "empty image_name", _line(i))
    dup = names.duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((names == names.iloc[i]).to_numpy())[0])
        raise input_error(path, f"duplicate image_name '{names.iloc[i]}' (first seen on line {_line(first)})",
                          _line(i))

    target = pd.to_numeric(raw["target"].str.strip(), errors="coerce")
    bad = ~target.isin([0, 1]).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise input_error(path, f"target must be 0 or 1, got {raw['target'].iloc[i]!r}", _line(i))

    age_text = raw["age_approx"].str.strip()
    age = pd.to_numeric(age_text.replace("", pd.NA), errors="coerce").astype("float64")
    bad = (age.isna() & (age_text != "")).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise input_error(path, f"age_approx is not a number: {raw['age_approx'].iloc[i]!r}", _line(i))

    for i, name in enumerate(names):
        jpg = src / "images" / f"{name}.jpg"
        if not jpg.is_file():
            raise input_error(path, f"image {jpg} is listed but does not exist", _line(i))

    def text(col: str, lower: bool = False) -> pd.Series:
        s = raw[col].str.strip()
        return (s.str.lower() if lower else s).replace("", pd.NA).astype("string")

    return pd.DataFrame({
        "image_name": names.astype("string"),
        "benign_malignant": text("benign_malignant", lower=True),
        "diagnosis": text("diagnosis"),
        "sex": text("sex", lower=True),
        "age_approx": age,
        "target": target.astype("int64"),
    })


def drop_degenerate(labels: pd.DataFrame, src: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """labels without the images that are no photographs (stripes, one colour), and the names left out."""
    flags = [degenerate(view_of(Path(src) / "images" / f"{n}.jpg")) for n in labels["image_name"]]
    bad = np.array([f is not None for f in flags])
    return labels[~bad].reset_index(drop=True), labels.loc[bad, "image_name"].tolist()


def split_labels(labels: pd.DataFrame, test_size: float = 0.2, seed: int = 42,
                 labels_path: str | Path = "labels.csv") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/test split on target; each part sorted by image_name with a fresh index."""
    try:
        train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_size, random_state=seed,
                                               stratify=labels["target"].to_numpy())
    except ValueError as e:
        raise input_error(labels_path, f"cannot make a stratified {test_size} test split: {e}") from None
    parts = []
    for idx in (train_idx, test_idx):
        part = labels.iloc[np.sort(idx)].sort_values("image_name", kind="stable").reset_index(drop=True)
        parts.append(part)
    return parts[0], parts[1]


def competition_frames(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The four CSVs of the competition layout (plus test_labels.csv), keyed by file name."""
    def with_blanks(df: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
        out = df.copy()
        out["patient_id"] = pd.Series(pd.NA, index=out.index, dtype="string")
        out["anatom_site_general_challenge"] = pd.Series(pd.NA, index=out.index, dtype="string")
        return out.loc[:, list(columns)]

    return {
        "train.csv": with_blanks(train, TRAIN_COLUMNS),
        "test.csv": with_blanks(test, TEST_COLUMNS),
        "sample_submission.csv": pd.DataFrame({"image_name": test["image_name"],
                                               "target": np.zeros(len(test), dtype="int64")}),
        "test_labels.csv": test.loc[:, ["image_name", "target"]].copy(),
    }


def _shown(path: Path) -> str:
    """A path as typed from the repository root when it lies near it, otherwise absolute."""
    path = Path(path).resolve()
    for base in (REPO, REPO.parent):
        if path.is_relative_to(base):
            return os.path.relpath(path, REPO)
    return str(path)


def regenerate_command(src: Path, out: Path, test_size: float, seed: int) -> str:
    return (f"python scripts/make_demo_data.py --src {_shown(src)} --out {_shown(out)} "
            f"--test-size {test_size:g} --seed {seed}")


def readme_text(train: pd.DataFrame, test: pd.DataFrame, test_size: float, seed: int, command: str,
                dropped: list[str] = ()) -> str:
    n = len(train) + len(test)
    pos_tr, pos_te = int(train["target"].sum()), int(test["target"].sum())
    return f"""# Demo data: {n} ISIC Archive thumbnails in the competition layout

{n} dermoscopic thumbnails (about 250x250 px) from the ISIC Archive with their benign/malignant labels
({pos_tr + pos_te} malignant = melanoma, {n - pos_tr - pos_te} benign), released under CC0 as the
data set "UDA-1" (see LICENSE.txt and ATTRIBUTION.txt, which must stay with the images). It is a small,
offline stand-in for the SIIM-ISIC 2020 data, laid out like the competition's:

- `train.csv`: image_name, patient_id, sex, age_approx, anatom_site_general_challenge, diagnosis,
  benign_malignant, target
- `test.csv`: image_name, patient_id, sex, age_approx, anatom_site_general_challenge (no labels)
- `sample_submission.csv`: image_name, target (all 0), in test.csv order
- `test_labels.csv`: image_name, target of the test images, kept apart so the demo can score its test AUC
- `jpeg/train/<image_name>.jpg`, `jpeg/test/<image_name>.jpg`: byte-for-byte copies of the source JPEGs

## Left out

{len(dropped)} images of the source are not used: they are degenerate (vertical colour stripes, every column
nearly constant; no dermoscopy), as `melanoma check` reports them{': ' + ', '.join(dropped) if dropped else ''}.

## Split

Stratified on target (scikit-learn `train_test_split`, test_size={test_size:g}, random_state={seed}); rows are
sorted by image_name in each file.

| split | images | malignant | rate |
|-------|-------:|----------:|-----:|
| train | {len(train)} | {pos_tr} | {pos_tr / max(len(train), 1):.3f} |
| test  | {len(test)} | {pos_te} | {pos_te / max(len(test), 1):.3f} |

## Missing metadata

The source has no patient id and no anatomical site. Both columns are written empty: the pipeline treats an
empty patient_id as one patient per image (so cross-validation groups by image) and an empty site as missing.
age_approx (float) and sex (lower-case) are copied from the source and are empty where it has no value.

## Regenerate

From the repository root:

    {command}
"""


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise input_error(out, "exists and is not a folder; refusing to replace it")
    unexpected = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_NAMES)
    if unexpected:
        raise input_error(out, "exists and holds files this script does not write "
                               f"({', '.join(unexpected[:5])}); refusing to replace it")


def make_demo(src: str | Path = DEFAULT_SRC, out: str | Path = DEFAULT_OUT, test_size: float = 0.2,
              seed: int = 42) -> dict[str, int]:
    """Validate `src`, write the demo set into a temporary sibling of `out`, then move it into place.

    Returns counts: train, test, train_pos, test_pos.
    """
    src, out = Path(src).resolve(), Path(out).resolve()
    labels, dropped = drop_degenerate(load_labels(src), src)
    train, test = split_labels(labels, test_size, seed, src / "labels.csv")
    _check_replaceable(out)
    if out == src or out.is_relative_to(src) or src.is_relative_to(out):
        raise input_error(out, f"output folder overlaps the source {src}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old: Path | None = None
    try:
        for name, frame in competition_frames(train, test).items():
            frame.to_csv(tmp / name, index=False, na_rep="")
        for split, part in (("train", train), ("test", test)):
            folder = tmp / "jpeg" / split
            folder.mkdir(parents=True)
            for name in part["image_name"]:
                shutil.copyfile(src / "images" / f"{name}.jpg", folder / f"{name}.jpg")
        for name in LICENSE_FILES:
            shutil.copyfile(src / name, tmp / name)
        command = regenerate_command(src, out, test_size, seed)
        (tmp / "README.md").write_text(readme_text(train, test, test_size, seed, command, dropped), encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700

        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rmdir(old)
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            if old is not None:
                os.rename(old, out)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return {"train": len(train), "test": len(test), "dropped": len(dropped),
            "train_pos": int(train["target"].sum()), "test_pos": int(test["target"].sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help=f"source folder (default {DEFAULT_SRC})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--test-size", type=float, default=0.2, help="fraction held out as test (default 0.2)")
    parser.add_argument("--seed", type=int, default=42, help="random_state of the split (default 42)")
    args = parser.parse_args(argv)
    if not 0 < args.test_size < 1:
        parser.error("--test-size must be between 0 and 1")
    try:
        c = make_demo(args.src, args.out, args.test_size, args.seed)
    except MelanomaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {Path(args.out).resolve()}: train {c['train']} images ({c['train_pos']} malignant), "
          f"test {c['test']} images ({c['test_pos']} malignant)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
