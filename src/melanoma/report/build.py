"""`melanoma report` and `melanoma compare`: read runs, compute, draw, write report.html + report.json."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from melanoma.config import Config
from melanoma.data.schema import AGE, ID, PATIENT, SEX, SITE, TARGET
from melanoma.errors import InputError
from melanoma.files import staged_dir, write_json, write_text
from melanoma import calibration
from melanoma.report import figures, html
from melanoma.report.evaluate import compare_pair, evaluate, operating_points
from melanoma.report.inputs import Run, metadata, read_any, read_runs, test_labels
from melanoma.report.metrics import brier, cluster_codes, ece, reliability
from melanoma.scoring import fmt_auc

log = logging.getLogger(__name__)
AGE_BANDS = ((0, 30, "<30"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"), (75, 1000, "75+"))


def age_band(age: pd.Series) -> pd.Series:
    a = pd.to_numeric(age, errors="coerce")
    out = pd.Series("missing", index=age.index, dtype="object")
    for lo, hi, name in AGE_BANDS:
        out[(a >= lo) & (a < hi)] = name
    return out


def size_group(width: pd.Series, height: pd.Series, keep: int) -> pd.Series:
    """"WxH" for the `keep` most common original sizes (the cameras), "other" for the rest."""
    w, h = pd.to_numeric(width, errors="coerce"), pd.to_numeric(height, errors="coerce")
    known = w.notna() & h.notna() & (w > 0) & (h > 0)
    label = pd.Series("unknown", index=width.index, dtype="object")
    label[known] = w[known].astype(int).astype(str) + "x" + h[known].astype(int).astype(str)
    common = label[known].value_counts().index[:keep]
    label[known & ~label.isin(common)] = "other"
    return label


def _frame(preds: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """Predictions with the metadata columns joined by image_name (NaN where unknown)."""
    return preds.join(meta, on=ID, how="left", rsuffix="_meta")


def _groups(df: pd.DataFrame, cfg: Config, with_fold: bool) -> dict[str, pd.Series]:
    groups = {}
    for name, col in (("site", SITE), ("sex", SEX)):
        if df[col].notna().any():
            groups[name] = df[col].fillna("missing").astype(str)
    if df[AGE].notna().any():
        groups["age"] = age_band(df[AGE])
    if df["width"].notna().any():
        groups["image size"] = size_group(df["width"], df["height"], cfg.report.size_groups)
    if with_fold and df["fold"].notna().any():
        groups["fold"] = df["fold"].map(lambda f: "missing" if pd.isna(f) else str(int(f)))
    return groups


def _evaluate(df: pd.DataFrame, cfg: Config, seed: int, desc: str, with_fold: bool) -> dict[str, Any]:
    r = cfg.report
    return evaluate(df[TARGET].to_numpy(), df["pred"].to_numpy(), cluster_codes(df[PATIENT]),
                    _groups(df, cfg, with_fold), r.bootstrap, seed, r.min_positives, r.calibration_bins, desc)


def _labelled_test(run: Run, labels: pd.DataFrame | None, notes: list[str]) -> pd.DataFrame | None:
    if labels is None or not len(run.test):
        return None
    joined = run.test.merge(labels, on=ID, how="inner")
    if len(joined) < len(run.test):
        notes.append(f"{run.label}: {len(run.test) - len(joined)} of {len(run.test)} test predictions have no "
                     "label in paths.test_labels; the test figures use the labelled ones")
    return joined if joined[TARGET].nunique() == 2 else None


def _calibrate(run: Run, oof: pd.DataFrame, test: pd.DataFrame | None, cfg: Config, stage: Path) -> dict | None:
    method, bins = cfg.report.calibration, cfg.report.calibration_bins
    if method == "none":
        return None
    cal = calibration.fit(oof[TARGET], oof["pred"], method)
    info = {"fitted_on": str(run.path), "stage": run.stage, "n": int(len(oof)),
            "score": "blended OOF ranks" if run.stage == "blend" else "OOF predictions"}
    calibration.save_calibrator(stage / f"calibrator-{run.label}.json", cal, **info)
    out: dict[str, Any] = {"method": method, "file": f"calibrator-{run.label}.json"}
    for split, df in (("oof", oof), ("test", test)):
        if df is None:
            out[split] = None
            continue
        p = calibration.apply(cal, df["pred"])
        out[split] = {"brier": brier(df[TARGET], p), "ece": ece(df[TARGET], p, bins),
                      "reliability": reliability(df[TARGET], p, bins)}
    return out


def _histories(run: Run) -> dict[int, pd.DataFrame]:
    out = {}
    for d in run.fold_dirs:
        if (d / "history.csv").is_file():
            try:
                out[int(d.name[4:])] = pd.read_csv(d / "history.csv")
            except (OSError, ValueError, pd.errors.ParserError) as e:
                log.warning("report: %s unreadable (%s)", d / "history.csv", e)
    return out


def _run_section(run: Run, meta: pd.DataFrame, labels, cfg: Config, seed: int, tfrec: str | None,
                 stage: Path, notes: list[str]) -> dict[str, Any]:
    from melanoma.report.gallery import gallery

    r = cfg.report
    oof = _frame(run.oof, meta)
    if oof[TARGET].nunique() < 2:
        raise InputError(f"report: {run.path}: the OOF predictions have only one class, so nothing to score")
    test_df = _labelled_test(run, labels, notes)
    test = _frame(test_df, meta) if test_df is not None else None
    sec: dict[str, Any] = {"label": run.label, "path": str(run.path), "stage": run.stage, "metric": run.metric,
                           "figures": {}}
    sec["oof"] = _evaluate(oof, cfg, seed, f"report: {run.label} OOF", with_fold=True)
    sec["test"] = _evaluate(test, cfg, seed, f"report: {run.label} test", False) if test is not None else None
    sec["operating_points"] = operating_points(
        oof[TARGET].to_numpy(), oof["pred"].to_numpy(), r.sensitivities,
        None if test is None else (test[TARGET].to_numpy(), test["pred"].to_numpy()))
    sec["calibration"] = _calibrate(run, oof, test, cfg, stage)
    sec["figures"]["subgroups"] = str(figures.subgroup_figure(
        run.label, sec["oof"]["subgroups"], stage / f"subgroups-{run.label}.png").relative_to(stage))
    hist = _histories(run)
    if hist:
        sec["figures"]["training"] = str(figures.training_figure(
            run.label, hist, stage / f"training-{run.label}.png").relative_to(stage))
    sec["gallery"] = gallery(run, meta, tfrec, cfg.n_folds, r.gallery_size, r.gradcam, stage)
    return sec


def _paths(cfg: Config):
    from melanoma.runtime.paths import resolve_paths

    return resolve_paths(cfg)


def report(cfg: Config, run_dirs: list[str | Path], out: str | Path) -> dict[str, Any]:
    """Write OUT/report.html, OUT/report.json, the PNGs and calibrators; return the report."""
    start = time.perf_counter()
    runs = read_runs(run_dirs)
    paths = _paths(cfg)
    seed = cfg.seed if cfg.report.seed is None else cfg.report.seed
    meta, notes = metadata(paths.data, paths.tfrecords)
    labels = test_labels(paths.test_labels)
    if labels is None:
        notes.append("no held-out test labels (paths.test_labels): OOF figures only")
    tfrec = str(paths.tfrecords)
    resampling = "images (no patient ids)" if meta[PATIENT].isna().all() else "patients"
    rep: dict[str, Any] = {"settings": {"bootstrap": cfg.report.bootstrap, "seed": seed, "resampling": resampling,
                                        "calibration": cfg.report.calibration,
                                        "sensitivities": list(cfg.report.sensitivities),
                                        "min_positives": cfg.report.min_positives},
                           "notes": notes, "runs": [], "figures": {},
                           # the summary leads with pAUC when every run is scored on it (ISIC 2024)
                           "metric": "pauc" if all(r.metric == "pauc" for r in runs) else "auc"}
    out = Path(out)
    with staged_dir(out, "report") as stage:
        for run in runs:
            rep["runs"].append(_run_section(run, meta, labels, cfg, seed, tfrec, stage, notes))
        for split in ("oof", "test"):
            items = [(s["label"], s[split]) for s in rep["runs"] if s[split] is not None]
            if items:
                what = "out-of-fold" if split == "oof" else "held-out test"
                rep["figures"][f"roc_{split}"] = str(figures.roc_figure(
                    items, stage / f"roc-{split}.png", f"ROC, {what} (bands: 95% bootstrap)").name)
                rep["figures"][f"pr_{split}"] = str(figures.pr_figure(
                    items, stage / f"pr-{split}.png", f"precision-recall, {what}").name)
        cal_items = [(s["label"], s["oof"]["reliability"], (s["calibration"] or {}).get("oof", {}) and
                      s["calibration"]["oof"]["reliability"]) for s in rep["runs"]]
        rep["figures"]["calibration"] = figures.calibration_figure(
            cal_items, stage / "calibration.png", "reliability, out-of-fold").name
        folds = [(s["label"], s["oof"]["subgroups"].get("fold", [])) for s in rep["runs"]]
        if any(f for _, f in folds):
            rep["figures"]["folds"] = figures.fold_figure(folds, stage / "folds.png").name
        last = rep["runs"][-1]
        if last["calibration"]:
            write_text(stage / "calibrator.json", (stage / last["calibration"]["file"]).read_text())
        rep["seconds"] = round(time.perf_counter() - start, 1)
        write_json(stage / "report.json", rep)
        write_text(stage / "report.html", html.page(rep, stage))
    for s in rep["runs"]:
        log.info("report: %s %s", s["label"], _headline(s))
    log.info("report: %s (%.0f s)", out / "report.html", rep["seconds"])
    return rep


def _headline(sec: dict[str, Any]) -> str:
    """'OOF AUC 0.9 [0.88, 0.92], pAUC 0.15; test AUC 0.9', the run's headline metric first (with its interval)."""
    oof, test = sec["oof"], sec["test"]
    first, second = ("pauc", "auc") if sec.get("metric") == "pauc" else ("auc", "pauc")
    ci = ", ".join(f"{v:.4f}" for v in oof[first]["ci"] or [])
    text = f"OOF {NAMES[first]} {fmt_auc(oof[first]['value'])} [{ci}], {NAMES[second]} {fmt_auc(oof[second]['value'])}"
    return text + ("" if test is None else f"; test {NAMES[first]} {fmt_auc(test[first]['value'])}")


NAMES = {"auc": "AUC", "pauc": "pAUC"}


def compare(cfg: Config, run_a: str | Path, run_b: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Paired OOF AUC difference of two runs on their common images (bootstrap over patients, DeLong)."""
    a, b = read_any(run_a), read_any(run_b)
    joined = a.oof.merge(b.oof[[ID, TARGET, "pred"]], on=ID, how="inner", suffixes=("_a", "_b"))
    if not len(joined):
        raise InputError(f"compare: {run_a} and {run_b} have no OOF image_name in common")
    differ = joined[f"{TARGET}_a"] != joined[f"{TARGET}_b"]
    if differ.any():
        raise InputError(f"compare: the runs disagree on the target of {int(differ.sum())} image(s), e.g. "
                         f"{joined[ID][differ].iloc[0]!r}: were they trained on the same train.csv?")
    if joined[f"{TARGET}_a"].nunique() < 2:
        raise InputError(f"compare: the {len(joined)} common OOF images have only one class")
    paths = _paths(cfg)
    meta, notes = metadata(paths.data, paths.tfrecords)
    patients = joined[ID].map(meta[PATIENT]) if len(meta) else pd.Series([None] * len(joined))
    seed = cfg.seed if cfg.report.seed is None else cfg.report.seed
    metric = "pauc" if a.metric == b.metric == "pauc" else "auc"  # ISIC 2024 runs lead with pAUC
    res = compare_pair(joined[f"{TARGET}_a"].to_numpy(), joined["pred_a"].to_numpy(), joined["pred_b"].to_numpy(),
                       cluster_codes(patients), cfg.report.bootstrap, seed, metric)
    res.update({"run_a": str(run_a), "run_b": str(run_b), "n_a": int(len(a.oof)), "n_b": int(len(b.oof)),
                "seed": seed, "resampling": "images (no patient ids)" if patients.isna().all() else "patients",
                "notes": [n for n in notes if "patient" in n]})
    if out is not None:
        write_json(Path(out), res)
    return res


def format_compare(res: dict[str, Any]) -> str:
    ci = res["ci"]
    on = (f" on {res['n']} common images ({res['positives']} malignant), {res['bootstrap']} resamples of "
          f"{res['units']} {res['resampling'].split(' ')[0]}")
    lines = [
        f"A {res['run_a']}: OOF AUC {res['auc_a']:.4f}",
        f"B {res['run_b']}: OOF AUC {res['auc_b']:.4f}",
        f"difference A - B: {res['diff']:+.4f}" + (f" [95% CI {ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "") + on,
        f"DeLong: z = {res['delong']['z']:.3f}, p = {res['delong']['p']:.4g}",
    ]
    p = res.get("pauc")
    if p is None:
        return "\n".join(lines)
    pci = p["ci"]
    return "\n".join([  # ISIC 2024: the competition's pAUC first, AUC (and DeLong's test of it) after
        f"A {res['run_a']}: OOF pAUC {p['a']:.4f}, AUC {res['auc_a']:.4f}",
        f"B {res['run_b']}: OOF pAUC {p['b']:.4f}, AUC {res['auc_b']:.4f}",
        f"pAUC difference A - B: {p['diff']:+.4f}" + (f" [95% CI {pci[0]:+.4f}, {pci[1]:+.4f}]" if pci else "") + on,
        f"AUC difference A - B: {res['diff']:+.4f}" + (f" [95% CI {ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""),
        f"DeLong (AUC): z = {res['delong']['z']:.3f}, p = {res['delong']['p']:.4g}",
    ])

