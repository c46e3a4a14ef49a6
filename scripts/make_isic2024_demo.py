"""Generate a small synthetic ISIC 2024 (SLICE-3D) data set in the competition's layout, for demos and tests.

Output (`--out`, a new or empty folder):
    train-metadata.csv     the real 55 columns in the real order (train-only columns included)
    test-metadata.csv      the real test metadata's 44 columns
    train-image.hdf5       one dataset per isic_id, a scalar of JPEG bytes (the real files' layout)
    test-image.hdf5
    sample_submission.csv  isic_id,target (0.3, as Kaggle's), in test-metadata order
    test_labels.csv        isic_id,target of the synthetic test tiles (not in the real data: lets a demo score
                           its test predictions)
    README.md              what this is and the command that made it

Metadata: every lesion's measurements are those of one of the 100 real training rows
(tests/data/isic2024/train-metadata-first100.csv), jittered, scaled by a size factor of its patient and placed on
the patient's skin colour (the `*ext` columns), with the dependent columns recomputed (L = Lext + deltaL,
C and H from A and B, deltaLB, the area/perimeter ratio). Malignant tiles (`--malignant-share`, 3% by default: enriched
from the real 0.098% so a demo can learn) are larger, darker, more irregular and more varied in colour than
their patient's other lesions: an "ugly duckling" signal that within-patient features see better than raw
values. Train-only columns (lesion_id, iddx_*, mel_*) follow the target, modelled on the competition's
taxonomy. Tiles: crops of the shipped demo images (data/demo: malignant tiles from malignant images, test tiles
from the demo's test images) resized to 61-239 px (median about 131, as the real tiles), JPEG quality 90.
Deterministic for a given --seed. Written into a temporary sibling folder that is renamed into place.

    python scripts/make_isic2024_demo.py --out data/isic2024_demo [--patients 40] [--tiles-per-patient 30]
        [--test-patients 5] [--malignant-share 0.03] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
try:
    from melanoma.data.hdf5 import write_tiles
    from melanoma.errors import MelanomaError, input_error
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO / "src"))
    from melanoma.data.hdf5 import write_tiles
    from melanoma.errors import MelanomaError, input_error

TEMPLATE = REPO / "tests" / "data" / "isic2024" / "train-metadata-first100.csv"
IMAGES = REPO / "data" / "demo"
TRAIN_COLUMNS = (
    "isic_id", "target", "patient_id", "age_approx", "sex", "anatom_site_general", "clin_size_long_diam_mm",
    "image_type", "tbp_tile_type", "tbp_lv_A", "tbp_lv_Aext", "tbp_lv_B", "tbp_lv_Bext", "tbp_lv_C",
    "tbp_lv_Cext", "tbp_lv_H", "tbp_lv_Hext", "tbp_lv_L", "tbp_lv_Lext", "tbp_lv_areaMM2",
    "tbp_lv_area_perim_ratio", "tbp_lv_color_std_mean", "tbp_lv_deltaA", "tbp_lv_deltaB", "tbp_lv_deltaL",
    "tbp_lv_deltaLB", "tbp_lv_deltaLBnorm", "tbp_lv_eccentricity", "tbp_lv_location", "tbp_lv_location_simple",
    "tbp_lv_minorAxisMM", "tbp_lv_nevi_confidence", "tbp_lv_norm_border", "tbp_lv_norm_color",
    "tbp_lv_perimeterMM", "tbp_lv_radial_color_std_max", "tbp_lv_stdL", "tbp_lv_stdLExt", "tbp_lv_symm_2axis",
    "tbp_lv_symm_2axis_angle", "tbp_lv_x", "tbp_lv_y", "tbp_lv_z", "attribution", "copyright_license",
    "lesion_id", "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5", "mel_mitotic_index",
    "mel_thick_mm", "tbp_lv_dnn_lesion_confidence")
TRAIN_ONLY = ("target", "lesion_id", "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5",
              "mel_mitotic_index", "mel_thick_mm", "tbp_lv_dnn_lesion_confidence")
TEST_COLUMNS = tuple(c for c in TRAIN_COLUMNS if c not in TRAIN_ONLY)
PATIENT_LEVEL = ("age_approx", "sex", "tbp_tile_type", "attribution", "copyright_license")
SKIN = ("tbp_lv_Lext", "tbp_lv_Aext", "tbp_lv_Bext", "tbp_lv_stdLExt")
SIZE_1D = ("clin_size_long_diam_mm", "tbp_lv_minorAxisMM", "tbp_lv_perimeterMM")
JITTERED = ("tbp_lv_deltaA", "tbp_lv_deltaB", "tbp_lv_deltaL", "tbp_lv_deltaLBnorm", "tbp_lv_stdL",
            "tbp_lv_color_std_mean", "tbp_lv_radial_color_std_max", "tbp_lv_norm_border", "tbp_lv_norm_color",
            "tbp_lv_eccentricity", "tbp_lv_symm_2axis", "tbp_lv_x", "tbp_lv_y", "tbp_lv_z")
MALIGNANT_DX = (  # (iddx_full, share): modelled on the competition's diagnosis taxonomy
    ("Malignant::Malignant adnexal epithelial proliferations - Follicular::Basal cell carcinoma::"
     "Basal cell carcinoma, Nodular", 0.4),
    ("Malignant::Malignant melanocytic proliferations (Melanoma)::Melanoma Invasive", 0.25),
    ("Malignant::Malignant melanocytic proliferations (Melanoma)::Melanoma in situ", 0.15),
    ("Malignant::Malignant epidermal proliferations::Squamous cell carcinoma in situ", 0.2))
OUTPUT_NAMES = ("train-metadata.csv", "test-metadata.csv", "train-image.hdf5", "test-image.hdf5",
                "sample_submission.csv", "test_labels.csv", "README.md")


def load_template(path: str | Path = TEMPLATE) -> pd.DataFrame:
    """The real training rows the measurements are drawn from (an R-style row-number column is dropped)."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "not found (the real ISIC 2024 rows this generator samples from)")
    df = pd.read_csv(path)
    lost = [c for c in TRAIN_COLUMNS if c not in df.columns]
    if lost:
        raise input_error(path, f"missing column(s) {', '.join(lost)}: not an ISIC 2024 train-metadata file", 1)
    return df.loc[:, list(TRAIN_COLUMNS)].reset_index(drop=True)


def _unique_ids(rng: np.random.Generator, n: int, prefix: str) -> np.ndarray:
    return np.array([f"{prefix}{i:07d}" for i in rng.choice(9_000_000, size=n, replace=False) + 1_000_000])


def make_metadata(template: pd.DataFrame, rng: np.random.Generator, patients: int, tiles_per_patient: float,
                  malignant_share: float) -> pd.DataFrame:
    """Training metadata (all 55 columns) for `patients` patients of about `tiles_per_patient` tiles each."""
    counts = np.clip(np.round(rng.lognormal(np.log(tiles_per_patient), 0.5, patients)), 3,
                     4 * tiles_per_patient).astype(int)
    patient = np.repeat(np.arange(patients), counts)
    n = len(patient)
    df = template.iloc[rng.integers(0, len(template), n)].reset_index(drop=True)  # each lesion's real row
    source = rng.integers(0, len(template), patients)  # each patient's real row: who they are, their skin
    for col in PATIENT_LEVEL + SKIN:
        df[col] = template[col].to_numpy()[source][patient]
    for col in SKIN[:3]:
        df[col] = df[col] + rng.normal(0.0, 1.5, n)  # skin colour varies over the body
    df["target"] = 0
    n_pos = max(1, int(round(malignant_share * n))) if malignant_share > 0 else 0
    df.loc[rng.choice(n, size=min(n_pos, n), replace=False), "target"] = 1
    lb_ratio = df["tbp_lv_deltaLB"] / np.hypot(df["tbp_lv_deltaL"], df["tbp_lv_deltaB"])
    _shape(df, rng, patient)
    _recompute(df, lb_ratio)
    df["isic_id"] = _unique_ids(rng, n, "ISIC_")
    df["patient_id"] = _unique_ids(rng, patients, "IP_")[patient]
    df["image_type"] = "TBP tile: close-up"
    _train_only(df, rng)
    return df.loc[:, list(TRAIN_COLUMNS)]


def _shape(df: pd.DataFrame, rng: np.random.Generator, patient: np.ndarray) -> None:
    """Jitter the drawn measurements, give each patient a typical size, contrast, colour variety and border
    (so raw values differ between patients), and make malignant lesions stand out from their patient's."""
    n, p = len(df), int(patient.max()) + 1
    for col in JITTERED:
        v = df[col].to_numpy(dtype=np.float64)
        df[col] = v * rng.lognormal(0.0, 0.08, n) if (v >= 0).all() else v + rng.normal(0.0, 0.08 * v.std(), n)
    size, contrast, variety = (rng.lognormal(0.0, s, p)[patient] for s in (0.5, 0.35, 0.4))
    border = rng.normal(0.0, 1.0, p)[patient]
    k = np.where(df["target"].to_numpy() == 1, rng.uniform(0.3, 1.2, n), 0.0)  # how atypical a malignant one is
    scale = size * rng.lognormal(0.0, 0.15, n) * (1.0 + 0.9 * k)
    for col in SIZE_1D:
        df[col] = df[col].to_numpy(dtype=np.float64) * scale
    df["tbp_lv_areaMM2"] = df["tbp_lv_areaMM2"].to_numpy(dtype=np.float64) * scale**2
    df["tbp_lv_deltaL"] *= contrast * (1.0 + 0.5 * k)
    df["tbp_lv_deltaA"] = df["tbp_lv_deltaA"] * contrast + 1.5 * k
    df["tbp_lv_stdL"] *= contrast * (1.0 + 0.6 * k)
    df["tbp_lv_deltaLBnorm"] *= contrast * (1.0 + 0.3 * k)
    for col in ("tbp_lv_color_std_mean", "tbp_lv_radial_color_std_max"):
        df[col] *= variety * (1.0 + 0.8 * k)
    df["tbp_lv_norm_color"] = np.clip(df["tbp_lv_norm_color"] * variety + 2.0 * k, 0, 10)
    df["tbp_lv_norm_border"] = np.clip(df["tbp_lv_norm_border"] + border + 1.8 * k, 0.5, 10)
    df["tbp_lv_symm_2axis"] = np.clip(df["tbp_lv_symm_2axis"] + 0.1 * k, 0, 1)
    df["tbp_lv_eccentricity"] = np.clip(df["tbp_lv_eccentricity"], 0, 0.999)
    df["tbp_lv_nevi_confidence"] = np.clip(df["tbp_lv_nevi_confidence"] * np.exp(-1.5 * k), 0, 100)
    df["clin_size_long_diam_mm"] = df["clin_size_long_diam_mm"].round(2)


def _recompute(df: pd.DataFrame, lb_ratio: pd.Series) -> None:
    """The columns that follow from others in the real rows (exactly, to 1e-6: L, A, B, C, H and the area/
    perimeter ratio; deltaLB is within 7% of hypot(deltaL, deltaB), so each row keeps its real ratio)."""
    for ch in ("L", "A", "B"):
        df[f"tbp_lv_{ch}"] = df[f"tbp_lv_{ch}ext"] + df[f"tbp_lv_delta{ch}"]
    for suffix in ("", "ext"):
        a, b = df[f"tbp_lv_A{suffix}"], df[f"tbp_lv_B{suffix}"]
        df[f"tbp_lv_C{suffix}"] = np.hypot(a, b)
        df[f"tbp_lv_H{suffix}"] = np.degrees(np.arctan2(b, a))
    df["tbp_lv_deltaLB"] = lb_ratio * np.hypot(df["tbp_lv_deltaL"], df["tbp_lv_deltaB"])
    df["tbp_lv_area_perim_ratio"] = df["tbp_lv_perimeterMM"] ** 2 / df["tbp_lv_areaMM2"]


def _train_only(df: pd.DataFrame, rng: np.random.Generator) -> None:
    """lesion_id, iddx_*, mel_* following the target; tbp_lv_dnn_lesion_confidence stays as drawn."""
    n, pos = len(df), df["target"].to_numpy() == 1
    has_lesion = pos | (rng.random(n) < 0.05)  # every malignant tile and a few benign ones were followed up
    df["lesion_id"] = pd.Series(_unique_ids(rng, n, "IL_"), dtype="object").where(has_lesion)
    dx = np.array([d for d, _ in MALIGNANT_DX])[rng.choice(len(MALIGNANT_DX), n, p=[p for _, p in MALIGNANT_DX])]
    full = np.where(pos, dx, np.where(has_lesion, "Benign::Benign melanocytic proliferations::Nevus", "Benign"))
    df["iddx_full"] = full
    parts = pd.Series(full).str.split("::", expand=True).reindex(columns=range(5))
    for i in range(5):
        df[f"iddx_{i + 1}"] = parts[i].to_numpy()
    invasive = pos & (full == MALIGNANT_DX[1][0])
    df["mel_thick_mm"] = np.where(invasive, np.round(rng.lognormal(np.log(0.5), 0.5, n), 2), np.nan)
    df["mel_mitotic_index"] = pd.Series(rng.choice(["<1/mm^2", "1/mm^2", "2/mm^2"], n),
                                        dtype="object").where(invasive)


def make_tiles(meta: pd.DataFrame, pools: dict[int, list[Path]], rng: np.random.Generator):
    """(isic_id, JPEG bytes) per row: a random crop of an image of the row's class, 61-239 px."""
    cache: dict[Path, Image.Image] = {}
    for isic_id, target in zip(meta["isic_id"], meta["target"]):
        pool = pools[int(target)]
        src = pool[int(rng.integers(len(pool)))]
        if src not in cache:
            with Image.open(src) as im:
                cache[src] = im.convert("RGB")
        yield isic_id, _tile(cache[src], rng)


def _tile(img: Image.Image, rng: np.random.Generator) -> bytes:
    w, h = img.size
    side = int(min(w, h) * rng.uniform(0.55, 0.95))
    left = int(np.clip((w - side) / 2 + rng.uniform(-0.1, 0.1) * w, 0, w - side))
    top = int(np.clip((h - side) / 2 + rng.uniform(-0.1, 0.1) * h, 0, h - side))
    out = int(np.clip(np.round(rng.lognormal(np.log(131), 0.25)), 61, 239))
    tile = img.crop((left, top, left + side, top + side)).resize((out, out), Image.Resampling.BILINEAR)
    tile = tile.rotate(90 * int(rng.integers(4)))
    buf = io.BytesIO()
    tile.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def image_pools(images: str | Path = IMAGES) -> dict[str, dict[int, list[Path]]]:
    """Demo images by split and class: train from train.csv, test from test_labels.csv."""
    images = Path(images)
    pools = {}
    for split, table in (("train", "train.csv"), ("test", "test_labels.csv")):
        path = images / table
        if not path.is_file():
            raise input_error(path, "not found (the demo images the tiles are cut from; see data/demo)")
        labels = pd.read_csv(path, usecols=["image_name", "target"])
        pools[split] = {t: [images / "jpeg" / split / f"{n}.jpg" for n in labels.image_name[labels.target == t]]
                        for t in (0, 1)}
        for t, files in pools[split].items():
            if not files:
                raise input_error(path, f"no image with target {t}: both classes are needed")
            lost = [f for f in files if not f.is_file()]
            if lost:
                raise input_error(lost[0], "not found (listed in " + str(path) + ")")
    return pools


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise input_error(out, "exists and is not an empty folder: refusing to write into it (choose a new "
                               "--out, or remove it yourself)")


def make_demo(out: str | Path, patients: int = 40, tiles_per_patient: float = 30, test_patients: int = 5,
              malignant_share: float = 0.03, seed: int = 0, template: str | Path = TEMPLATE,
              images: str | Path = IMAGES) -> dict[str, int]:
    """Write the synthetic set into `out` (new or empty); returns counts."""
    out = Path(out).resolve()
    _check_out(out)
    real, pools = load_template(template), image_pools(images)
    rng = np.random.default_rng(seed)
    train = make_metadata(real, rng, patients, tiles_per_patient, malignant_share)
    test = make_metadata(real, rng, test_patients, max(3.0, tiles_per_patient / 2), malignant_share)
    test = test[~test.isic_id.isin(train.isic_id) & ~test.patient_id.isin(train.patient_id)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        train.to_csv(tmp / "train-metadata.csv", index=False)
        test.loc[:, list(TEST_COLUMNS)].to_csv(tmp / "test-metadata.csv", index=False)
        test[["isic_id"]].assign(target=0.3).to_csv(tmp / "sample_submission.csv", index=False)
        test[["isic_id", "target"]].to_csv(tmp / "test_labels.csv", index=False)
        write_tiles(tmp / "train-image.hdf5", make_tiles(train, pools["train"], rng))
        write_tiles(tmp / "test-image.hdf5", make_tiles(test, pools["test"], rng))
        counts = {"train": len(train), "train_pos": int(train.target.sum()), "test": len(test),
                  "test_pos": int(test.target.sum()), "patients": patients, "test_patients": test_patients}
        (tmp / "README.md").write_text(_readme(counts, seed, malignant_share, tiles_per_patient), encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        _check_out(out)  # again: something may have appeared meanwhile
        os.replace(tmp, out)  # replaces only an absent or empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts


def _readme(c: dict[str, int], seed: int, share: float, per_patient: float) -> str:
    return f"""# Synthetic ISIC 2024 (SLICE-3D) demo set

Made by `scripts/make_isic2024_demo.py --patients {c['patients']} --tiles-per-patient {per_patient:g} \
--test-patients {c['test_patients']} --malignant-share {share:g} --seed {seed}`. Not real data: the layout and
the columns are the competition's, the values are drawn from 100 real training rows and shifted for malignant
tiles, and the tiles are crops of the shipped ISIC Archive demo images (CC0, see data/demo), not 3D-TBP tiles.

| file | rows | malignant |
|---|---:|---:|
| train-metadata.csv, train-image.hdf5 | {c['train']} | {c['train_pos']} |
| test-metadata.csv, test-image.hdf5 | {c['test']} | {c['test_pos']} (in test_labels.csv) |
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="a new or empty folder")
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--tiles-per-patient", type=float, default=30.0, help="median tiles per patient")
    ap.add_argument("--test-patients", type=int, default=5)
    ap.add_argument("--malignant-share", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=Path, default=IMAGES, help=f"demo images to cut tiles from ({IMAGES})")
    args = ap.parse_args(argv)
    if args.patients < 1 or args.test_patients < 1 or args.tiles_per_patient < 1:
        ap.error("--patients, --test-patients and --tiles-per-patient must be at least 1")
    if not 0 <= args.malignant_share < 1:
        ap.error("--malignant-share must be in [0, 1)")
    try:
        c = make_demo(args.out, args.patients, args.tiles_per_patient, args.test_patients, args.malignant_share,
                      args.seed, images=args.images)
    except MelanomaError as e:
        print(f"melanoma: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {c['train']} training tiles ({c['train_pos']} malignant) of {c['patients']} "
          f"patients, {c['test']} test tiles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
