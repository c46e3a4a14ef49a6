"""`melanoma doctor`: where this runs, the paths it resolves, the backend and devices it would train on, the
package versions, and what the configured run still lacks, each with its fix. The notebooks run it first."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from melanoma import __version__
from melanoma.config import recipe_summary
from melanoma.runtime.backend import resolve_backend, resolve_precision
from melanoma.runtime.devices import device_problem
from melanoma.runtime.machine import expected_tpu, framework_versions, tensorflow_can_use_tpu, tpu_attached
from melanoma.runtime.place import Place, detect, explain_paths
from melanoma.errors import ConfigError


def list_devices(backend: str) -> dict[str, Any]:
    """The devices the backend sees: kind, count and names. Imports the backend (call after use_backend)."""
    if backend == "jax":
        import jax

        devices = jax.devices()
        return {"kind": devices[0].platform, "count": len(devices), "names": sorted({d.device_kind for d in devices})}
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return {"kind": "gpu", "count": len(gpus), "names": [g.name for g in gpus]}
    return {"kind": "cpu", "count": 1, "names": [platform.processor() or platform.machine()]}


def _has_tfrecords(folder: Path) -> bool:
    return (folder / "manifest.json").is_file() or any(folder.glob("train*.tfrec"))


def problems(cfg: Any, paths: dict[str, dict[str, str]], backend: str, versions: dict[str, str | None],
             tpu: bool) -> list[dict[str, str]]:
    """What the configured stages need and do not have: each a problem and its fix."""
    out: list[dict[str, str]] = []

    def add(problem: str, fix: str) -> None:
        out.append({"problem": problem, "fix": fix})

    stages = set(cfg.stages)
    data = Path(paths["data"]["value"])
    if stages & {"folds", "prepare", "tabular"}:
        for name in ("train.csv", "test.csv"):
            if not (data / name).is_file():
                add(f"{data / name} not found", "attach the competition to the notebook, run `melanoma kaggle "
                    "download --csv-only`, or set paths.data")
                break
    tfrecords = paths["tfrecords"]["value"]
    if "train" in stages and "prepare" not in stages and "://" not in tfrecords and not _has_tfrecords(Path(tfrecords)):
        add(f"no TFRecords in {tfrecords}", f"attach the public TFRecords at prepare.size={cfg.prepare.size}, add "
            "prepare to stages, or set paths.tfrecords")
    if backend == "jax" and not versions.get("jax"):
        add("train.devices.backend is jax but jax is not installed",
            "pip install 'melanoma[jax]' (CPU) or 'jax[tpu]' (TPU)")
    if not (versions.get("tensorflow") or versions.get("tensorflow-cpu") or versions.get("tensorflow-tpu")):
        add("TensorFlow is not installed (tf.data reads the TFRecords on every backend)",
            "pip install tensorflow-cpu (on a TPU image, never over its own build)")
    if tpu and backend == "tensorflow" and not tensorflow_can_use_tpu():
        add("a TPU is attached but TensorFlow here has no TPU build, so training would run on the CPU",
            "set train.devices.backend=auto (or jax)")
    weights = str(cfg.train.weights)
    if weights.lower() not in ("none", "imagenet", "") and not Path(weights).expanduser().is_file():
        add(f"train.weights file {weights} not found", "use none, imagenet or an existing .h5 file")
    for folder in staging_leftovers([Path(paths["runs"]["value"]), Path(paths["submission"]["value"]).parent,
                                     Path(cfg.report.out) if cfg.report.out else None]):
        add(f"{folder}: a staging folder left by an interrupted report, export, tabular or segment run",
            "the next run of that command into the same folder removes it (or delete it)")
    return out


def staging_leftovers(roots: list[Path | None], depth: int = 3) -> list[Path]:
    """Stale .staging-* folders (their process is gone) in the roots and their subfolders, `depth` levels down."""
    from melanoma.files import stale_staging

    found: set[Path] = set()
    level = [r for r in roots if r is not None and r.is_dir()]
    for _ in range(depth + 1):
        found.update(p for folder in level for p in stale_staging(folder))
        level = [c for folder in level for c in folder.iterdir() if c.is_dir() and not c.name.startswith(".")]
    return sorted(found)


def doctor(cfg: Any, place: Place | None = None, devices: bool = True) -> dict[str, Any]:
    """Everything `melanoma doctor` prints, as a dict (the --json output)."""
    place = detect(cfg) if place is None else place
    paths = explain_paths(cfg, place)
    versions = {"melanoma": __version__, "python": platform.python_version(), **framework_versions()}
    tpu = tpu_attached()
    try:
        backend, why = resolve_backend(cfg.train.devices.backend)
    except ConfigError as e:
        backend, why = None, str(e)
    report: dict[str, Any] = {"place": place.name, "paths": paths, "backend": backend, "backend_reason": why,
                              "tpu_attached": tpu, "tpu_expected": expected_tpu(cfg.train.devices.tpu),
                              "versions": versions}
    if backend and devices:
        try:
            report["devices"] = list_devices(backend)
        except (ImportError, RuntimeError) as e:
            report["devices"] = {"error": str(e)}
    kind = report.get("devices", {}).get("kind", "cpu")
    report["precision"] = resolve_precision(cfg.train.devices.precision, kind)
    report["recipe"] = recipe_summary(cfg)
    report["problems"] = problems(cfg, paths, backend or "tensorflow", versions, tpu)
    dev = report.get("devices", {})
    wrong = device_problem(cfg.train.devices.tpu, cfg.train.devices.allow_cpu_fallback, backend, dev["kind"],
                           dev["count"]) if backend and "kind" in dev else None
    if wrong:  # what `train` would refuse: first, it costs the whole session (and says more than the same
        # problem found from the environment alone)
        report["problems"] = [p for p in report["problems"] if not p["problem"].startswith("a TPU is attached")]
        problem, fix = wrong.split(": ", 1)
        report["problems"].insert(0, {"problem": problem, "fix": fix})
    if backend is None:
        report["problems"].insert(0, {"problem": why, "fix": "see train.devices.backend in the config"})
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"place      {report['place']}"]
    for key, entry in report["paths"].items():
        lines.append(f"paths.{key:<18} {entry['value']}  ({entry['source']})")
    dev = report.get("devices", {})
    device_text = (f"{dev.get('count')} x {dev.get('kind')} {', '.join(dev.get('names', []))}" if "kind" in dev
                   else dev.get("error", "not probed"))
    lines += [f"backend    {report['backend']} ({report['backend_reason']})",
              f"devices    {device_text}",
              f"precision  {report['precision']}",
              f"recipe     {report['recipe']}",
              "versions   " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)]
    missing = [k for k, v in report["versions"].items() if not v]
    if missing:
        lines.append("not installed: " + ", ".join(missing))
    if report["problems"]:
        lines.append("problems:")
        lines += [f"  - {p['problem']}: {p['fix']}" for p in report["problems"]]
    else:
        lines.append("no problems found for the configured run")
    return "\n".join(lines)
