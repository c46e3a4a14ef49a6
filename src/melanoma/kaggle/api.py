"""Everything that talks to Kaggle: credentials, downloads, kernel push/status/output, submissions.

The Kaggle client (`pip install "melanoma[kaggle]"`) is imported lazily, inside `make_api` only: importing
it tries to authenticate at once, so commands that do not talk to Kaggle never import it. Commands that do
call `connect()`, which checks the credentials first (one clear line when they are missing or malformed)
and only then builds the client. Every function takes the API object as a parameter, so tests pass a fake.

Credentials are read only to check them: their values never reach a log, a message, a config or a file.
The notebook in kernels/ is generated from one source file (kernels/notebook.ipy) by `build_notebook`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melanoma.runtime.datasets import EXTERNAL_DATASETS, TFRECORD_DATASETS, external_dataset  # noqa: F401 (re-used names)
from melanoma.errors import KaggleError
from melanoma.files import read_json, write_json

log = logging.getLogger(__name__)

COMPETITION = "siim-isic-melanoma-classification"
CSV_FILES = ("train.csv", "test.csv", "sample_submission.csv")
# kernel-metadata.json per accelerator. machine_shape values as documented by the kaggle CLI (kernels.md):
# TpuV5E8 = TPU v5e-8, NvidiaTeslaT4 = GPU T4 x2 (P100 no longer runs the default image's CUDA builds).
ACCELERATORS = {
    "tpu": {"enable_gpu": False, "enable_tpu": True, "machine_shape": "TpuV5E8"},
    "gpu": {"enable_gpu": True, "enable_tpu": False, "machine_shape": "NvidiaTeslaT4"},
    "none": {"enable_gpu": False, "enable_tpu": False},
}
CREDENTIALS_HELP = (
    "create an API token at https://www.kaggle.com/settings (API -> Generate New Token) and set it as "
    "KAGGLE_API_TOKEN (a Colab or Kaggle secret of that name) or save it in ~/.kaggle/access_token (chmod 600); "
    "the legacy kaggle.json (KAGGLE_CONFIG_DIR moves its folder) or KAGGLE_USERNAME and KAGGLE_KEY still work"
)


# --------------------------------------------------------------------------------------------------------
# credentials


@dataclass(frozen=True)
class Credentials:
    """Where the credentials were found and the username they name (never the key itself)."""

    source: str
    username: str | None


def _config_dir(environ: Mapping[str, str], home: Path) -> Path:
    # The client's own rule: KAGGLE_CONFIG_DIR, else ~/.kaggle, else (Linux, no ~/.kaggle) ~/.config/kaggle.
    if environ.get("KAGGLE_CONFIG_DIR"):
        return Path(environ["KAGGLE_CONFIG_DIR"])
    legacy = home / ".kaggle"
    if legacy.exists():
        return legacy
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"


def check_credentials(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Credentials:
    """Find Kaggle credentials as the client does, or raise KaggleError saying where to put them.

    Order: an access token (KAGGLE_API_TOKEN, a value or a file; access_token in ~/.kaggle or in
    KAGGLE_CONFIG_DIR), then the legacy forms: KAGGLE_USERNAME + KAGGLE_KEY, then kaggle.json in the config
    folder. A credentials file readable by others gives a warning, as the client's own check does.
    """
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    user_env, key_env = environ.get("KAGGLE_USERNAME"), environ.get("KAGGLE_KEY")
    token = environ.get("KAGGLE_API_TOKEN")
    if token is not None:
        if not token.strip():
            raise KaggleError(f"KAGGLE_API_TOKEN is set but empty: {CREDENTIALS_HELP}")
        if Path(token).is_file() and not Path(token).read_text().strip():
            raise KaggleError(f"{token} (named by KAGGLE_API_TOKEN) is empty: {CREDENTIALS_HELP}")
        return Credentials("KAGGLE_API_TOKEN", user_env)
    folders = [home / ".kaggle"] + ([Path(environ["KAGGLE_CONFIG_DIR"])] if environ.get("KAGGLE_CONFIG_DIR") else [])
    for path in (folder / name for folder in folders for name in ("access_token", "access_token.txt")):
        if path.is_file():
            if not path.read_text().strip():
                raise KaggleError(f"{path} is empty: {CREDENTIALS_HELP}")
            _warn_if_readable(path)
            return Credentials(str(path), user_env)
    if user_env or key_env:
        missing = "KAGGLE_KEY" if user_env else "KAGGLE_USERNAME"
        if not (user_env and key_env):
            raise KaggleError(f"{missing} is not set (the other half of KAGGLE_USERNAME/KAGGLE_KEY is): "
                              f"set both, or unset both and {CREDENTIALS_HELP}")
        return Credentials("KAGGLE_USERNAME/KAGGLE_KEY", user_env)
    path = _config_dir(environ, home) / "kaggle.json"
    if not path.is_file():
        raise KaggleError(f"no Kaggle credentials found (looked for KAGGLE_API_TOKEN, "
                          f"{' and '.join(str(f / 'access_token') for f in folders)}, KAGGLE_USERNAME/KAGGLE_KEY "
                          f"and {path}): {CREDENTIALS_HELP}")
    try:
        data = read_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        # Say where, never what: the message of a JSON error can quote the key.
        where = f" (line {e.lineno})" if isinstance(e, json.JSONDecodeError) else ""
        raise KaggleError(f"{path}: not valid JSON{where}; expected "
                          '{"username": "...", "key": "..."}: download a new token from '
                          "https://www.kaggle.com/settings and save it there") from None
    if not isinstance(data, dict):
        raise KaggleError(f'{path}: expected a JSON object {{"username": "...", "key": "..."}}')
    for field in ("username", "key"):
        if not isinstance(data.get(field), str) or not data[field].strip():
            raise KaggleError(f"{path}: missing '{field}' (expected {{\"username\": \"...\", \"key\": \"...\"}}): "
                              "download a new token from https://www.kaggle.com/settings and save it there")
    _warn_if_readable(path)
    return Credentials(str(path), data["username"])


def _warn_if_readable(path: Path) -> None:
    if os.name != "nt" and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s is readable by other users: run chmod 600 %s", path, path)


def make_api() -> Any:
    """The authenticated Kaggle client (kaggle.api.kaggle_api_extended.KaggleApi); imported here only."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise KaggleError('the Kaggle client is not installed: pip install "melanoma[kaggle]" '
                          "(or pip install kaggle==2.2.4)") from None
    except SystemExit:  # older clients exit at import when they find no credentials
        raise KaggleError(f"the Kaggle client found no usable credentials: {CREDENTIALS_HELP}") from None
    api = KaggleApi()
    try:
        api.authenticate()
    except SystemExit:  # the client exits (not raises) on credentials it cannot use; `except Exception` misses it
        raise KaggleError(f"Kaggle did not accept the credentials: {CREDENTIALS_HELP}") from None
    return api


def connect(factory: Callable[[], Any] | None = None) -> tuple[Any, Credentials]:
    """Check the credentials, then build the client (`factory`, default `make_api`)."""
    creds = check_credentials()
    return (factory or make_api)(), creds


def _call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the client, turning its errors into one KaggleError line (SystemExit included)."""
    try:
        return fn(*args, **kwargs)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the client raises anything from HTTP to ValueError
        msg = " ".join(str(e).split()) or type(e).__name__
        raise KaggleError(f"{what} failed: {msg}") from None


# --------------------------------------------------------------------------------------------------------
# download


def tfrecords_dataset(size: int) -> str:
    """The public TFRecords dataset (owner/slug) for an image side, or KaggleError listing the sizes."""
    if size not in TFRECORD_DATASETS:
        raise KaggleError(f"no public TFRecords at {size} px; sizes: {', '.join(map(str, TFRECORD_DATASETS))}")
    return TFRECORD_DATASETS[size]


def _safe_extract(archive: Path, target: Path) -> list[str]:
    """Extract a zip into target, refusing members that would land outside it; return the member files."""
    names = []
    with zipfile.ZipFile(archive) as z:
        root = target.resolve()
        for info in z.infolist():
            dest = (target / info.filename).resolve()
            if dest != root and root not in dest.parents:
                raise KaggleError(f"{archive}: member {info.filename!r} would be written outside {target}")
            if not info.is_dir():
                names.append(info.filename)
        z.extractall(target)
    return names


def _done_marker(out: Path, unit: str) -> Path:
    return out / ".done" / f"{unit.replace('/', '__')}.json"


def _is_done(out: Path, unit: str) -> bool:
    """A unit is finished when its marker lists files that all exist with their recorded sizes."""
    marker = _done_marker(out, unit)
    try:
        files = read_json(marker)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((out / f).is_file() and (out / f).stat().st_size == size for f, size in files.items())


def _fetch(out: Path, unit: str, target: Path, fetch: Callable[[Path], None]) -> list[Path]:
    """Download one unit into a staging folder (kept on failure, so the client can resume), unpack its
    zips into `target`, move other files there, then write the marker that makes the next call skip it."""
    if _is_done(out, unit):
        log.info("kaggle: %s already downloaded (%s)", unit, _done_marker(out, unit))
        return []
    staging = out / ".partial" / unit.replace("/", "__")
    staging.mkdir(parents=True, exist_ok=True)
    log.info("kaggle: downloading %s -> %s", unit, target)
    fetch(staging)
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for item in sorted(p for p in staging.rglob("*") if p.is_file()):
        if item.suffix == ".zip":
            written += [target / name for name in _safe_extract(item, target)]
        else:
            dest = target / item.relative_to(staging)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(item, dest)
            written.append(dest)
    if not written:
        raise KaggleError(f"kaggle: downloading {unit} gave no files (is the name right?)")
    files = {str(p.relative_to(out)): p.stat().st_size for p in written}
    write_json(_done_marker(out, unit), {"unit": unit, "files": files})
    shutil.rmtree(staging)
    return written


def download(api: Any, out: str | Path, competition: str = COMPETITION, csv_only: bool = False,
             tfrecords: int | None = None, skip_competition: bool = False) -> list[Path]:
    """Competition files (all, or only the CSVs) into OUT/<competition>/, and the public TFRecords at
    one size into OUT/melanoma-SxS/: the layout of /kaggle/input, which `paths.data` and
    `paths.tfrecords` point at. Resumable: finished files are not fetched again."""
    out = Path(out)
    written: list[Path] = []
    comp_dir = out / competition
    if not skip_competition:
        if csv_only:
            for name in CSV_FILES:
                written += _fetch(out, f"{competition}/{name}", comp_dir, lambda tmp, name=name: _call(
                    f"downloading {name} of {competition}", api.competition_download_file, competition, name,
                    path=str(tmp), quiet=True))
        else:
            written += _fetch(out, competition, comp_dir, lambda tmp: _call(
                f"downloading {competition}", api.competition_download_files, competition, path=str(tmp),
                quiet=True))
    if tfrecords is not None:
        dataset = tfrecords_dataset(tfrecords)
        written += _fetch(out, dataset, out / dataset.split("/")[1], lambda tmp: _call(
            f"downloading {dataset}", api.dataset_download_files, dataset, path=str(tmp), quiet=True, unzip=False))
    return written


def push(api: Any, folder: str | Path) -> dict[str, Any]:
    """`kaggle kernels push -p FOLDER`; returns ref, url, version and the error the API reports, if any."""
    resp = _call("kaggle kernels push", api.kernels_push, str(folder))
    result = {k: getattr(resp, k, None) for k in ("ref", "url", "version_number", "error")}
    invalid = [s for k in ("invalid_dataset_sources", "invalid_competition_sources") for s in getattr(resp, k, None) or []]
    if result["error"] or invalid:
        raise KaggleError(f"kaggle kernels push: {result['error'] or 'invalid sources: ' + ', '.join(invalid)}")
    return result


def upload_dataset(api: Any, folder: str | Path, ref: str, message: str) -> dict[str, Any]:
    """A private dataset OWNER/SLUG from FOLDER (its dataset-metadata.json names it): a new version when it exists
    (`kaggle datasets version -p FOLDER --dir-mode zip`), else created (`kaggle datasets create`). Subfolders go up
    as zips, which Kaggle unpacks; the notebook also unpacks any it finds packed."""
    exists = True
    try:
        api.dataset_status(ref)
    except (Exception, SystemExit):  # noqa: BLE001 - the client says "not found" through any exception type
        exists = False
    if exists:
        resp = _call(f"kaggle datasets version {ref}", api.dataset_create_version, str(folder), message,
                     quiet=True, dir_mode="zip")
    else:
        resp = _call(f"kaggle datasets create {ref}", api.dataset_create_new, str(folder), public=False, quiet=True,
                     dir_mode="zip")
    error = getattr(resp, "error", None)
    if error:
        raise KaggleError(f"kaggle datasets {'version' if exists else 'create'} {ref}: {error}")
    return {"ref": ref, "created": not exists, "url": getattr(resp, "url", None) or f"https://www.kaggle.com/datasets/{ref}"}


def _name(value: Any) -> str:
    """An API enum (or string) as a lower-case word: SubmissionStatus.COMPLETE -> complete."""
    return str(getattr(value, "name", value) or "").rsplit(".", 1)[-1].lower()


def status(api: Any, kid: str) -> dict[str, Any]:
    resp = _call(f"kernel status of {kid}", api.kernels_status, kid)
    return {"kernel": kid, "status": _name(getattr(resp, "status", None)),
            "failure_message": getattr(resp, "failure_message", None) or None}


def output(api: Any, kid: str, out: str | Path) -> list[str]:
    """Download the kernel's output files (submission.csv, runs/...) into `out`."""
    Path(out).mkdir(parents=True, exist_ok=True)
    result = _call(f"downloading the output of {kid}", api.kernels_output, kid, str(out), force=True, quiet=True)
    files = result[0] if isinstance(result, tuple) else result
    return [str(f) for f in files or []]


# --------------------------------------------------------------------------------------------------------
# submissions


def submit(api: Any, path: str | Path, message: str, competition: str = COMPETITION, wait: float = 60.0,
           poll: float = 5.0, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Submit a file, then poll the competition's submissions (up to `wait` s) for its status and score."""
    path = Path(path)
    resp = _call(f"submitting {path}", api.competition_submit, str(path), message, competition, quiet=True)
    reply = getattr(resp, "message", None)
    result: dict[str, Any] = {"file": str(path), "message": message, "reply": reply, "status": None,
                              "public_score": None, "private_score": None, "ref": None, "error": None}
    if reply and "could not" in str(reply).lower():
        raise KaggleError(f"submitting {path}: {reply}")
    deadline = time.monotonic() + wait
    while True:
        subs = _call(f"listing the submissions to {competition}", api.competition_submissions, competition) or []
        # Ours: the newest submission with our description (the list is newest first).
        mine = next((s for s in subs if getattr(s, "description", None) == message), None)
        if mine is not None:
            result.update(ref=getattr(mine, "ref", None), status=_name(getattr(mine, "status", None)),
                          public_score=getattr(mine, "public_score", None) or None,
                          private_score=getattr(mine, "private_score", None) or None,
                          error=getattr(mine, "error_description", None) or None)
        if (result["status"] not in (None, "", "pending")) or time.monotonic() >= deadline:
            return result
        sleep(poll)
