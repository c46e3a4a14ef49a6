"""Synthetic competition-shaped metadata with a learnable, realistic signal, for tests and benchmarks.

`metadata_template()` generates a test.csv-like table (image_name, patient_id, sex, age_approx,
anatom_site_general_challenge) with the published shape of the competition's test.csv: 10,982 images of 690
patients, heavy-tailed images per patient, its shares of sexes, ages and sites. Only a few summary numbers of
the real files are written here; no row of them is (the competition's data may not be redistributed).

`competition_like(template, ...)` resamples whole patients of such a table (its images per patient, sexes,
ages and sites as they occur together), perturbs them a little, gives
every patient a camera (the original image size; a few images come from another one) and draws the target
from a risk model built on what is known of the real training data:

- the malignant rate rises with age, slowly below 40 and steeply above 60;
- men are at higher risk; head/neck, palms/soles and oral/genital lesions are riskier, extremities less;
- patients with few images are riskier than the many-image (mole-mapping) patients;
- the camera (image size) shifts the rate, more so for older patients (clinics differ in case mix);
- "ugly ducklings": an image taken at a size other than the patient's usual one, or at a site the patient
  rarely has photographed, is riskier;
- a per-patient random effect that no feature sees, and the intercept set to reach the wanted rate.

It is a stand-in: the figures measured on it say how the models compare on data of this shape, not what they
score on the real data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from melanoma.data.schema import AGE, ID, PATIENT, SEX, SITE, TARGET

# (width, height, share of patients, log-odds shift): common dermoscopy camera sizes of the 2020 data.
CAMERAS = [
    (6000, 4000, 0.42, -0.5),
    (1872, 1053, 0.20, 0.6),
    (1053, 1872, 0.05, 0.6),
    (640, 480, 0.07, 0.9),
    (4288, 2848, 0.06, 0.0),
    (3264, 2448, 0.05, 0.3),
    (2592, 1936, 0.05, 0.5),
    (1920, 1080, 0.04, 1.0),
    (5184, 3456, 0.03, -0.2),
    (1024, 768, 0.03, 0.8),
]
SITE_EFFECT = {"head/neck": 0.6, "oral/genital": 0.9, "palms/soles": 0.4, "torso": 0.0,
               "upper extremity": -0.1, "lower extremity": -0.2}


# Summary shares of the competition's metadata (test.csv; train.csv for the few missing values).
SEX_SHARES = {"male": 0.57, "female": 0.43}
SITE_SHARES = {"torso": 0.515, "lower extremity": 0.245, "upper extremity": 0.148, "head/neck": 0.058,
               "palms/soles": 0.011, "oral/genital": 0.004}  # the rest of the images (1.9%): site missing
MISSING_SEX, MISSING_AGE = 0.004, 0.004  # shares of patients
AGE_MEAN, AGE_SD = 48.5, 15.4  # the patients' youngest age, in steps of 5 from 15 to 90
IMAGES_MEDIAN, IMAGES_SIGMA, IMAGES_MIN, IMAGES_MAX = 12, 0.77, 2, 115  # lognormal images per patient


def _images_per_patient(n_rows: int, n_patients: int, rng: np.random.Generator) -> np.ndarray:
    counts = np.clip(np.round(rng.lognormal(np.log(IMAGES_MEDIAN), IMAGES_SIGMA, n_patients)),
                     IMAGES_MIN, IMAGES_MAX).astype(int)
    if not IMAGES_MIN * n_patients <= n_rows <= IMAGES_MAX * n_patients:
        raise ValueError(f"{n_rows} images cannot be shared by {n_patients} patients")
    while counts.sum() != n_rows:  # nudge random patients until the total matches exactly
        i = rng.integers(n_patients)
        step = 1 if counts.sum() < n_rows else -1
        if IMAGES_MIN <= counts[i] + step <= IMAGES_MAX:
            counts[i] += step
    return counts


def metadata_template(n_rows: int = 10982, n_patients: int = 690, seed: int = 0) -> pd.DataFrame:
    """A generated test.csv-like table shaped like the competition's (see the module docstring): one sex and a
    youngest age per patient, later visits 5-20 years on for about a third of them, sites drawn from a
    per-patient mix of the competition's shares (patients favour a few sites), a few values missing."""
    rng = np.random.default_rng(seed)
    counts = _images_per_patient(n_rows, n_patients, rng)
    sex = rng.choice(list(SEX_SHARES), n_patients, p=list(SEX_SHARES.values())).astype(object)
    sex[rng.random(n_patients) < MISSING_SEX] = None
    age = np.clip(5 * np.round(rng.normal(AGE_MEAN, AGE_SD, n_patients) / 5), 15, 90)
    age[rng.random(n_patients) < MISSING_AGE] = np.nan
    visits = np.where(rng.random(n_patients) < 0.35, rng.choice([1, 1, 1, 2, 3, 4], n_patients), 0)
    sites = np.array(list(SITE_SHARES), dtype=object)
    shares = np.array(list(SITE_SHARES.values()))
    shares = shares / shares.sum()
    site_missing = 1 - sum(SITE_SHARES.values())
    rows = []
    for p, n in enumerate(counts):
        mix = 0.5 * shares + 0.5 * rng.dirichlet(5 * shares)
        site = rng.choice(sites, n, p=mix)
        site[rng.random(n) < site_missing] = None
        ages = np.minimum(age[p] + 5 * rng.integers(0, visits[p] + 1, n), 90)
        rows.append(pd.DataFrame({PATIENT: f"IP_{p:07d}", SEX: sex[p], AGE: ages, SITE: site}))
    df = pd.concat(rows, ignore_index=True).iloc[rng.permutation(n_rows)].reset_index(drop=True)
    df.insert(0, ID, [f"ISIC_{i:07d}" for i in range(n_rows)])  # sorted, like the real file
    return df


def _age_effect(age: np.ndarray) -> np.ndarray:
    a = np.nan_to_num(age, nan=50.0)
    return 0.02 * np.clip(a - 40, 0, None) + 0.06 * np.clip(a - 60, 0, None)


def _resample(template: pd.DataFrame, n_rows: int, rng: np.random.Generator, prefix: str) -> pd.DataFrame:
    """Whole template patients drawn with replacement until n_rows images, each a new patient."""
    groups = [g for _, g in template.groupby(PATIENT, sort=True)]
    parts, total, p = [], 0, 0
    while total < n_rows:
        g = groups[int(rng.integers(len(groups)))]
        g = g.iloc[rng.permutation(len(g))].head(n_rows - total).copy()
        shift = 5.0 * rng.integers(-1, 2)  # the same patient drawn twice is not the same person
        g[AGE] = np.clip(g[AGE] + shift, 0, 90)
        g[PATIENT] = f"IP_{prefix}{p:06d}"
        parts.append(g)
        total += len(g)
        p += 1
    df = pd.concat(parts, ignore_index=True)
    df[ID] = [f"ISIC_{prefix}{i:07d}" for i in range(len(df))]
    return df


def _cameras(df: pd.DataFrame, rng: np.random.Generator, other_share: float) -> np.ndarray:
    """A camera index per image: the patient's own, or another for `other_share` of the images."""
    shares = np.array([c[2] for c in CAMERAS])
    pids = df[PATIENT].to_numpy()
    patients, inverse = np.unique(pids, return_inverse=True)
    own = rng.choice(len(CAMERAS), len(patients), p=shares / shares.sum())[inverse]
    other = rng.choice(len(CAMERAS), len(df), p=shares / shares.sum())
    return np.where(rng.random(len(df)) < other_share, other, own)


def competition_like(template: pd.DataFrame, n_rows: int = 33126, pos_rate: float = 0.0176, seed: int = 0,
                     labelled: bool = True, prefix: str = "") -> pd.DataFrame:
    """train.csv-like rows (image_name, patient_id, sex, age_approx, anatom_site_general_challenge, width,
    height and, when labelled, target) resampled from `template` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    df = _resample(template[[PATIENT, SEX, AGE, SITE]].copy(), n_rows, rng, prefix)
    cam = _cameras(df, rng, other_share=0.08)
    df["width"] = [CAMERAS[c][0] for c in cam]
    df["height"] = [CAMERAS[c][1] for c in cam]
    df = df[[ID, PATIENT, SEX, AGE, SITE, "width", "height"]]
    if not labelled:
        return df
    by_patient = df.groupby(PATIENT, sort=False)
    n_images = by_patient[ID].transform("size").to_numpy(dtype=np.float64)
    site = df[SITE].fillna("missing")
    site_share = site.groupby([df[PATIENT], site]).transform("size").to_numpy() / n_images
    size_key = df["width"].astype(str) + "x" + df["height"].astype(str)
    counts = pd.DataFrame({"pid": df[PATIENT], "size": size_key}).value_counts().reset_index()
    usual = df[PATIENT].map(counts.drop_duplicates("pid").set_index("pid")["size"])  # sorted by count first
    patients, inverse = np.unique(df[PATIENT].to_numpy(), return_inverse=True)
    patient_effect = rng.normal(0.0, 1.0, len(patients))[inverse]
    age = df[AGE].to_numpy(dtype=np.float64)
    logit = (_age_effect(age)
             + 0.35 * (df[SEX] == "male").to_numpy()
             + site.map(SITE_EFFECT).fillna(0.2).to_numpy(dtype=np.float64)
             - 0.6 * np.log(n_images / 10.0)
             + np.array([CAMERAS[c][3] for c in cam]) * (1.0 + np.nan_to_num(age, nan=50.0) / 60.0)
             + 1.2 * (size_key != usual).to_numpy()
             + 0.8 * (site_share <= 0.15)
             + patient_effect)
    # The intercept that gives the wanted rate in expectation (bisection on the mean probability).
    lo, hi = -20.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(logit + mid)))) < pos_rate else (lo, mid)
    p = 1 / (1 + np.exp(-(logit + lo)))
    df = df.assign(**{TARGET: (rng.random(len(df)) < p).astype(int)})
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)
