"""report.html: one self-contained page (every image embedded as a data: URI, no script or style from outside).

A tiny inline script counts images that failed to load into `data-broken-images` on <body>, so a headless
browser test can read it from the DOM.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

SECTIONS = (("summary", "Summary"), ("curves", "ROC and precision-recall"), ("operating", "Operating points"),
            ("calibration", "Calibration"), ("subgroups", "Subgroups"), ("gallery", "Error gallery"),
            ("training", "Training"))

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1300px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}th,td{border:1px solid #ddd;padding:3px 7px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.note{color:#8a5a00;background:#fff6e0;padding:4px 8px;margin:4px 0;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ddd;padding:6px;font-size:12px;width:360px}
img{max-width:100%}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}nav a{margin-right:12px}
"""
CHECK_IMAGES = ("<script>window.addEventListener('load',function(){var b=0;for(var i of document.images)"
                "{if(!i.complete||i.naturalWidth===0)b++;}document.body.dataset.brokenImages=b;"
                "document.body.dataset.images=document.images.length;});</script>")


def esc(v: Any) -> str:
    return html.escape(str(v))


def num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return esc(v)


def with_ci(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    ci = m.get("ci")
    return f"{m['value']:.3f}" + (f" <small>[{ci[0]:.3f}, {ci[1]:.3f}]</small>" if ci else "")


def image(folder: Path, rel: str | None, alt: str) -> str:
    if rel is None:
        return ""
    data = base64.b64encode((folder / rel).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _splits(entry: dict) -> list[tuple[str, dict]]:
    """(split, its section) for the OOF and test sections an entry has."""
    return [(split, entry[split]) for split in ("oof", "test") if entry.get(split) is not None]


def _summary(rep: dict) -> str:
    # The headline metric first: pAUC where every run is scored on it (ISIC 2024), else AUC.
    order = ("pauc", "auc") if rep.get("metric") == "pauc" else ("auc", "pauc")
    names = {"auc": "AUC [95% CI]", "pauc": "pAUC above 80% TPR (0-0.2)"}
    rows = [[esc(run["label"]), split, str(ev["n"]), str(ev["positives"]), str(ev["units"]),
             *(with_ci(ev[m]) for m in order), with_ci(ev["ap"]), num(ev["brier"], 4), num(ev["ece"], 4)]
            for run in rep["runs"] for split, ev in _splits(run)]
    return table(["run", "set", "images", "malignant", "resampled units", *(names[m] for m in order),
                  "average precision", "Brier", "ECE"], rows)


def _operating(rep: dict) -> str:
    parts = []
    for run in rep["runs"]:
        rows = [[esc(op["name"]), f"{op['threshold']:.4g}", split, str(c["tp"]), str(c["fp"]), str(c["fn"]),
                 str(c["tn"]), num(c["sensitivity"]), num(c["specificity"]), num(c["ppv"]), num(c["npv"]),
                 num(c["f1"]), num(c["fn_per_1000"], 1)]
                for op in run["operating_points"] for split, c in _splits(op)]
        parts.append(f"<h3>{esc(run['label'])}</h3>" + table(
            ["threshold chosen for", "threshold", "set", "TP", "FP", "FN", "TN", "sensitivity", "specificity",
             "PPV", "NPV", "F1", "missed melanomas per 1,000 lesions"], rows))
    return ("<p>Thresholds are chosen on the OOF predictions and applied unchanged to the test set. "
            "A score at or above the threshold is called malignant.</p>" + "".join(parts))


def _calibration(rep: dict, folder: Path) -> str:
    rows = []
    for run in rep["runs"]:
        cal = run.get("calibration") or {}
        for split, ev in _splits(run):
            after = (cal.get(split) or {})
            rows.append([esc(run["label"]), split, num(ev["brier"], 4), num(ev["ece"], 4),
                         num(after.get("brier"), 4), num(after.get("ece"), 4)])
    method = rep["settings"]["calibration"]
    note = (f"<p>Calibrator: {esc(method)}, fitted on each run's OOF predictions (so its OOF figures are "
            f"optimistic; the test figures are not). Saved as <code>calibrator-RUN.json</code>; "
            f"<code>calibrator.json</code> is that of {esc(rep['runs'][-1]['label'])}. "
            "<code>blend.calibrate: PATH</code> applies one to a blend.</p>") if method != "none" else ""
    return (image(folder, rep["figures"].get("calibration"), "reliability diagram") + note
            + table(["run", "set", "Brier", "ECE", "Brier, calibrated", "ECE, calibrated"], rows))


def _subgroups(rep: dict, folder: Path) -> str:
    parts = []
    for run in rep["runs"]:
        parts.append(f"<h3>{esc(run['label'])}</h3>" + image(folder, run["figures"].get("subgroups"), "subgroups"))
        rows = [[esc(f"{family}: {e['group']}"), str(e["n"]), str(e["positives"]),
                 with_ci({"value": e["auc"], "ci": e["ci"]}) if e["auc"] is not None else esc(e["note"])]
                for family, entries in run["oof"]["subgroups"].items() for e in entries]
        parts.append(table(["subgroup (OOF)", "images", "malignant", "AUC [95% CI]"], rows))
    return "".join(parts)


def _gallery(rep: dict, folder: Path) -> str:
    parts = []
    for run in rep["runs"]:
        g = run.get("gallery") or {"cards": [], "notes": []}
        cards = []
        for c in g["cards"]:
            meta = ", ".join(f"{k} {c[k]:g}" if isinstance(c[k], float) else f"{k} {esc(c[k])}"
                             for k in ("sex", "age", "site") if c[k] is not None) or "no metadata"
            cards.append(f'<div class="card">{image(folder, c["png"], c["image_name"])}<br><b>{esc(c["kind"])}'
                         f'</b> {esc(c["image_name"])}: score {c["score"]:.3f}, fold {esc(c["fold"])}; {meta}</div>')
        notes = "".join(f'<div class="note">{esc(n)}</div>' for n in g["notes"])
        parts.append(f"<h3>{esc(run['label'])}</h3>{notes}<div class=\"cards\">{''.join(cards)}</div>")
    return ("<p>The most confident errors on the OOF predictions: malignant lesions scored lowest (false "
            "negatives) and benign lesions scored highest (false positives). Heat map: Grad-CAM of the fold "
            "model that predicted the image.</p>" + "".join(parts))


def _training(rep: dict, folder: Path) -> str:
    parts = [image(folder, rep["figures"].get("folds"), "per-fold AUC")]
    for run in rep["runs"]:
        fig = run["figures"].get("training")
        parts.append(f"<h3>{esc(run['label'])}</h3>" + (image(folder, fig, "training curves") if fig else
                     '<div class="note">no training history (not an image run, or no foldK/history.csv)</div>'))
    return "".join(parts)


def page(rep: dict, folder: Path) -> str:
    nav = "".join(f'<a href="#{k}">{t}</a>' for k, t in SECTIONS)
    notes = "".join(f'<div class="note">{esc(n)}</div>' for n in rep["notes"])
    s = rep["settings"]
    body = {
        "summary": f"<p>{s['bootstrap']} bootstrap resamples of {esc(s['resampling'])} (seed {s['seed']}); "
                   "intervals are 95% percentile intervals.</p>" + notes + _summary(rep),
        "curves": "".join(image(folder, rep["figures"].get(k), k) for k in ("roc_oof", "pr_oof", "roc_test", "pr_test")),
        "operating": _operating(rep),
        "calibration": _calibration(rep, folder),
        "subgroups": _subgroups(rep, folder),
        "gallery": _gallery(rep, folder),
        "training": _training(rep, folder),
    }
    sections = "".join(f'<section id="{k}"><h2>{t}</h2>{body[k]}</section>' for k, t in SECTIONS)
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>melanoma report</title>"
            f"<style>{STYLE}</style>{CHECK_IMAGES}</head><body><h1>Evaluation report</h1><nav>{nav}</nav>"
            f"{sections}</body></html>\n")
