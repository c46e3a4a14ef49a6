"""Kaggle without network or credentials: a fake API, fake credential folders, the generated notebooks."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import types
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from helpers.layouts import competition_test_files
from melanoma.kaggle import api as kaggle, notebooks
from melanoma.cli import main
from melanoma.config import load_config
from melanoma.errors import KaggleError

from helpers.paths import ROOT
COMP = kaggle.COMPETITION
SECRET = "0123456789abcdef-not-a-real-key"


class FakeApi:
    """Stands in for KaggleApi: writes zips where the real one downloads them, records every call."""

    def __init__(self, fail: set[str] | None = None):
        self.calls: list[tuple] = []
        self.fail = fail or set()
        self.submissions = [SimpleNamespace(description="older", status="SubmissionStatus.COMPLETE", ref=1,
                                            public_score="0.9", private_score="0.9", error_description="")]
        self.polls = 0

    def _zip(self, path: str, name: str, members: dict[str, str]) -> None:
        with zipfile.ZipFile(Path(path) / name, "w") as z:
            for member, text in members.items():
                z.writestr(member, text)

    def competition_download_file(self, competition, file_name, path=None, force=False, quiet=False):
        self.calls.append(("file", competition, file_name))
        if file_name in self.fail:
            raise SystemExit(1)  # what the client does on some failures: must still be one clean line
        self._zip(path, f"{file_name}.zip", {file_name: "image_name,target\nISIC_1,0\n"})

    def competition_download_files(self, competition, path=None, force=False, quiet=True):
        self.calls.append(("competition", competition))
        self._zip(path, f"{competition}.zip", {"train.csv": "a\n", "test.csv": "b\n", "jpeg/test/ISIC_1.jpg": "j"})

    def dataset_download_files(self, dataset, path=None, force=False, quiet=True, unzip=False):
        self.calls.append(("dataset", dataset))
        self._zip(path, dataset.split("/")[1] + ".zip", {"train00-2182.tfrec": "t" * 10, "test00-687.tfrec": "u"})

    def kernels_push(self, folder):
        meta = json.loads((Path(folder) / "kernel-metadata.json").read_text())
        self.calls.append(("push", meta))
        assert (Path(folder) / meta["code_file"]).is_file()
        return SimpleNamespace(ref=f"/code/{meta['id']}", url=f"https://www.kaggle.com/code/{meta['id']}",
                               version_number=3, error="", invalid_dataset_sources=[],
                               invalid_competition_sources=[])

    def kernels_status(self, kernel):
        self.calls.append(("status", kernel))
        return SimpleNamespace(status="KernelWorkerStatus.ERROR", failure_message="out of TPU quota")

    def kernels_output(self, kernel, path, force=False, quiet=True):
        self.calls.append(("output", kernel, path))
        (Path(path) / "submission.csv").write_text("image_name,target\n")
        return [str(Path(path) / "submission.csv")], ""

    def competition_submit(self, file_name, message, competition, quiet=False):
        self.calls.append(("submit", Path(file_name).name, message, competition))
        self.submissions.insert(0, SimpleNamespace(description=message, status="SubmissionStatus.PENDING", ref=2,
                                                   public_score="", private_score="", error_description=""))
        return SimpleNamespace(message="Successfully submitted to SIIM-ISIC Melanoma Classification")

    def competition_submissions(self, competition):
        self.polls += 1
        if self.polls >= 2:  # scored on the second poll
            self.submissions[0].status, self.submissions[0].public_score = "SubmissionStatus.COMPLETE", "0.9512"
        return list(self.submissions)


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """An environment with no Kaggle credentials anywhere (a fresh HOME, no KAGGLE_* variables)."""
    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name in ("XDG_CONFIG_HOME",):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def fake_api(no_credentials, monkeypatch):
    """Credentials in the environment (fake) and the client replaced by a FakeApi."""
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    api = FakeApi()
    monkeypatch.setattr(kaggle, "make_api", lambda: api)
    return api


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------------------------------------------
# credentials


def kaggle_json(home: Path, text: str, mode: int = 0o600) -> Path:
    (home / ".kaggle").mkdir(exist_ok=True)
    path = home / ".kaggle" / "kaggle.json"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_credentials_found(tmp_path, caplog):
    home = tmp_path
    creds = kaggle.check_credentials({"KAGGLE_USERNAME": "bob", "KAGGLE_KEY": SECRET}, home)
    assert creds == kaggle.Credentials("KAGGLE_USERNAME/KAGGLE_KEY", "bob")
    path = kaggle_json(home, json.dumps({"username": "carol", "key": SECRET}))
    with caplog.at_level(logging.WARNING, logger="melanoma.kaggle.api"):
        assert kaggle.check_credentials({}, home) == kaggle.Credentials(str(path), "carol")
    assert caplog.text == ""  # 600: no warning
    (tmp_path / "cfgdir").mkdir()
    other = kaggle_json(tmp_path / "cfgdir", json.dumps({"username": "dan", "key": SECRET}))
    assert kaggle.check_credentials({"KAGGLE_CONFIG_DIR": str(other.parent)}, tmp_path / "nohome").username == "dan"
    assert kaggle.check_credentials({"KAGGLE_API_TOKEN": "KGAT_abc"}, tmp_path / "nohome").source == "KAGGLE_API_TOKEN"
    (home / ".kaggle" / "access_token").write_text("KGAT_abc\n")
    assert kaggle.check_credentials({}, home).source.endswith("access_token")


def test_access_tokens_come_first_wherever_they_are(tmp_path, caplog):
    """KAGGLE_API_TOKEN, then access_token in ~/.kaggle or KAGGLE_CONFIG_DIR, win over the legacy forms."""
    home = tmp_path / "home"
    home.mkdir()
    kaggle_json(home, json.dumps({"username": "carol", "key": SECRET}))
    legacy = {"KAGGLE_USERNAME": "bob", "KAGGLE_KEY": SECRET}
    assert kaggle.check_credentials(legacy, home).source == "KAGGLE_USERNAME/KAGGLE_KEY"
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    (config_dir / "access_token").write_text("KGAT_abc\n")
    (config_dir / "access_token").chmod(0o600)
    creds = kaggle.check_credentials({**legacy, "KAGGLE_CONFIG_DIR": str(config_dir)}, home)
    assert creds.source == str(config_dir / "access_token") and creds.username == "bob"
    (home / ".kaggle" / "access_token").write_text("KGAT_def\n")
    (home / ".kaggle" / "access_token").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="melanoma.kaggle.api"):
        assert kaggle.check_credentials({"KAGGLE_CONFIG_DIR": str(config_dir)}, home).source == str(
            home / ".kaggle" / "access_token")  # the client's own place is looked at first
    assert "readable by other users" in caplog.text and "KGAT" not in caplog.text
    token_file = tmp_path / "token.txt"
    token_file.write_text("KGAT_ghi")
    assert kaggle.check_credentials({"KAGGLE_API_TOKEN": str(token_file)}, home).source == "KAGGLE_API_TOKEN"


def test_world_readable_kaggle_json_warns(tmp_path, caplog):
    path = kaggle_json(tmp_path, json.dumps({"username": "carol", "key": SECRET}), mode=0o644)
    with caplog.at_level(logging.WARNING, logger="melanoma.kaggle.api"):
        kaggle.check_credentials({}, tmp_path)
    assert f"chmod 600 {path}" in caplog.text and SECRET not in caplog.text


@pytest.mark.parametrize("setup, environ, message", [
    # the current form (an access token) named first, the legacy ones after
    (None, {}, r"no Kaggle credentials found \(looked for KAGGLE_API_TOKEN, .*access_token, .*kaggle.json\): "
               r"create an API token at https://www.kaggle.com/settings .* KAGGLE_API_TOKEN .* "
               r"~/.kaggle/access_token .* legacy kaggle.json"),
    ('{"username": "carol", "key": "' + SECRET + '"', {}, r"kaggle.json: not valid JSON \(line 1\)"),
    ('["carol"]', {}, r"kaggle.json: expected a JSON object"),
    ('{"username": "carol"}', {}, r"kaggle.json: missing 'key'"),
    ('{"key": "' + SECRET + '"}', {}, r"kaggle.json: missing 'username'"),
    (None, {"KAGGLE_USERNAME": "bob"}, r"KAGGLE_KEY is not set"),
    (None, {"KAGGLE_KEY": SECRET}, r"KAGGLE_USERNAME is not set"),
    (None, {"KAGGLE_API_TOKEN": " "}, r"KAGGLE_API_TOKEN is set but empty"),
])
def test_credential_errors(tmp_path, setup, environ, message):
    if setup is not None:
        kaggle_json(tmp_path, setup)
    with pytest.raises(KaggleError, match=message) as e:
        kaggle.check_credentials(environ, tmp_path)
    assert "\n" not in str(e.value) and SECRET not in str(e.value)


def test_empty_access_token_file(tmp_path):
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "access_token").write_text("\n")
    with pytest.raises(KaggleError, match=r"access_token is empty"):
        kaggle.check_credentials({}, tmp_path)


def test_client_exit_and_absence_become_one_line(monkeypatch):
    """authenticate() raises SystemExit, which `except Exception` would miss; a missing client is clear."""
    class Exiting:
        def authenticate(self):
            raise SystemExit(1)

    module = types.ModuleType("kaggle.api.kaggle_api_extended")
    module.KaggleApi = Exiting
    for name in ("kaggle", "kaggle.api"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", module)
    with pytest.raises(KaggleError, match="Kaggle did not accept the credentials"):
        kaggle.make_api()
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", None)  # import fails
    with pytest.raises(KaggleError, match=r'the Kaggle client is not installed: pip install "melanoma\[kaggle\]"'):
        kaggle.make_api()


@pytest.mark.parametrize("args", [
    ["kaggle", "download", "--csv-only"], ["kaggle", "push"], ["kaggle", "status", "a/b"],
    ["kaggle", "output", "a/b"],
])
def test_commands_check_credentials_before_anything_else(no_credentials, tmp_path, capsys, args):
    code, out, err = run_cli(capsys, *args, "--config", ROOT / "configs" / "kaggle_tpu.yaml")
    lines = [ln for ln in err.splitlines() if ln.startswith("melanoma: error:")]
    assert code == 2 and len(lines) == 1 and "no Kaggle credentials found" in lines[0], err
    assert "KAGGLE_API_TOKEN" in lines[0] and "~/.kaggle/access_token" in lines[0] and not list(tmp_path.glob("data"))


def test_submit_reports_a_broken_file_before_missing_credentials(no_credentials, capsys):
    """The file is checked first: a user without credentials still learns that the file is wrong."""
    code, out, err = run_cli(capsys, "submit", "nothing.csv", "-m", "x", "--config", ROOT / "configs" / "kaggle_tpu.yaml")
    lines = [ln for ln in err.splitlines() if ln.startswith("melanoma: error:")]
    assert code == 2 and lines == ["melanoma: error: nothing.csv: not found"], err


# --------------------------------------------------------------------------------------------------------
# download


def test_download_csvs_and_tfrecords_resumable(tmp_path):
    api = FakeApi()
    out = tmp_path / "data"
    files = kaggle.download(api, out, csv_only=True, tfrecords=384)
    assert sorted(p.name for p in (out / COMP).iterdir()) == ["sample_submission.csv", "test.csv", "train.csv"]
    assert sorted(p.name for p in (out / "melanoma-384x384").iterdir()) == ["test00-687.tfrec", "train00-2182.tfrec"]
    assert len(files) == 5 and not (out / ".partial").exists() or not any((out / ".partial").iterdir())
    assert ("dataset", "cdeotte/melanoma-384x384") in api.calls
    # a second run fetches nothing; a removed or truncated file is fetched again, alone
    api.calls.clear()
    assert kaggle.download(api, out, csv_only=True, tfrecords=384) == [] and api.calls == []
    (out / COMP / "test.csv").unlink()
    (out / "melanoma-384x384" / "train00-2182.tfrec").write_text("cut")
    kaggle.download(api, out, csv_only=True, tfrecords=384)
    assert api.calls == [("file", COMP, "test.csv"), ("dataset", "cdeotte/melanoma-384x384")]
    assert (out / COMP / "test.csv").is_file() and (out / "melanoma-384x384" / "train00-2182.tfrec").stat().st_size == 10


def test_download_whole_competition_and_failures(tmp_path):
    api = FakeApi(fail={"test.csv"})
    kaggle.download(api, tmp_path, skip_competition=False)
    assert (tmp_path / COMP / "jpeg" / "test" / "ISIC_1.jpg").is_file() and (tmp_path / COMP / "train.csv").is_file()
    with pytest.raises(KaggleError, match=rf"downloading test.csv of {COMP} failed: 1"):
        kaggle.download(api, tmp_path / "b", csv_only=True)
    assert (tmp_path / "b" / COMP / "train.csv").is_file() and not (tmp_path / "b" / COMP / "test.csv").exists()
    with pytest.raises(KaggleError, match=r"no public TFRecords at 300 px; sizes: 128, 192, 256, 384, 512, 768"):
        kaggle.download(api, tmp_path, skip_competition=True, tfrecords=300)


def test_download_refuses_zip_slip(tmp_path):
    class Evil(FakeApi):
        def dataset_download_files(self, dataset, path=None, **kw):
            self._zip(path, "x.zip", {"../../escape.txt": "x"})

    with pytest.raises(KaggleError, match="would be written outside"):
        kaggle.download(Evil(), tmp_path / "d", skip_competition=True, tfrecords=128)
    assert not (tmp_path / "escape.txt").exists()


def test_cli_download_end_to_end(fake_api, tmp_path, capsys):
    code, out, err = run_cli(capsys, "kaggle", "download", "--csv-only", "--tfrecords", 256, "--out", tmp_path / "d")
    assert code == 0, err
    assert "5 file(s) downloaded" in out and (tmp_path / "d" / COMP / "sample_submission.csv").is_file()
    assert (tmp_path / "d" / "melanoma-256x256" / "train00-2182.tfrec").is_file()
    assert SECRET not in out + err


# --------------------------------------------------------------------------------------------------------
# kernel metadata, push, status, output


@pytest.mark.parametrize("accelerator, expected", [
    ("tpu", {"enable_tpu": True, "enable_gpu": False, "machine_shape": "TpuV5E8"}),
    ("gpu", {"enable_tpu": False, "enable_gpu": True, "machine_shape": "NvidiaTeslaT4"}),
    ("none", {"enable_tpu": False, "enable_gpu": False}),
])
def test_kernel_metadata(tmp_path, accelerator, expected):
    cfg = load_config(ROOT / "configs" / "kaggle_tpu.yaml", ["kaggle.source=https://github.com/alice/melanoma.git"])
    folder = notebooks.write_push_folder(cfg, tmp_path / "push", "alice/melanoma-tpu", accelerator,
                                      (ROOT / "kernels" / "notebook.ipy").read_text())
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert {k: meta[k] for k in expected} == expected and ("machine_shape" in meta) == (accelerator != "none")
    assert meta["id"] == "alice/melanoma-tpu" and meta["title"] == "Melanoma TPU"
    assert meta["language"] == "python" and meta["kernel_type"] == "notebook" and meta["is_private"] is True
    assert meta["enable_internet"] is True and meta["competition_sources"] == [COMP]
    assert meta["dataset_sources"] == ["cdeotte/melanoma-384x384"]  # prepare.size of kaggle_tpu.yaml
    assert not any(k.startswith("docker") for k in meta)  # the latest image, never a pin
    nb = json.loads((folder / meta["code_file"]).read_text())
    code = "".join("".join(c["source"]) for c in nb["cells"])
    assert 'SOURCE = "https://github.com/alice/melanoma.git"' in code and "YOUR-GITHUB-NAME" not in code


def test_push_from_a_dataset_source_and_placeholder(tmp_path):
    cfg = load_config(ROOT / "configs" / "kaggle_tpu.yaml", ["kaggle.source=melanoma-src"])
    text = (ROOT / "kernels" / "notebook.ipy").read_text()
    meta = notebooks.kernel_metadata(cfg, "alice/melanoma-tpu", "tpu", "nb.ipynb")
    assert meta["dataset_sources"] == ["cdeotte/melanoma-384x384", "alice/melanoma-src"]
    folder = notebooks.write_push_folder(cfg, tmp_path, "alice/melanoma-tpu", "tpu", text)
    nb = json.loads((folder / notebooks.NOTEBOOKS["kaggle"]).read_text())
    assert 'SOURCE = "/kaggle/input/melanoma-src"' in "".join("".join(c["source"]) for c in nb["cells"])
    with pytest.raises(KaggleError, match="set kaggle.source to your copy of this repository"):
        notebooks.write_push_folder(load_config(None), tmp_path, "alice/x", "tpu", text)


def test_cli_push_status_output(fake_api, tmp_path, capsys, monkeypatch, caplog):
    monkeypatch.chdir(ROOT)  # kernels/notebook.ipy, as a user runs it from the checkout
    cfg = ROOT / "configs" / "kaggle_tpu.yaml"
    src = "kaggle.source=https://github.com/alice/melanoma.git"
    with caplog.at_level(logging.DEBUG):
        code, out, err = run_cli(capsys, "kaggle", "push", "--config", cfg, "--set", src, "--accelerator", "gpu",
                                 "--out", tmp_path / "push")
    assert code == 0, err
    assert "pushed alice/melanoma-tpu: version 3" in out
    (_, meta), = [c for c in fake_api.calls if c[0] == "push"]
    assert meta["id"] == "alice/melanoma-tpu" and meta["machine_shape"] == "NvidiaTeslaT4"
    written = "".join(p.read_text() for p in (tmp_path / "push").rglob("*") if p.is_file())
    assert SECRET not in written + out + err + caplog.text  # credentials never land in files or logs
    code, out, err = run_cli(capsys, "kaggle", "status", "--config", cfg)
    assert code == 0 and out.strip() == "alice/melanoma-tpu: error (out of TPU quota)"
    code, out, err = run_cli(capsys, "kaggle", "output", "bob/other", "--out", tmp_path / "got")
    assert code == 0 and (tmp_path / "got" / "submission.csv").is_file() and "1 file(s) of bob/other" in out


def test_cli_push_dry_run_needs_no_credentials(no_credentials, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = run_cli(capsys, "kaggle", "push", "--dry-run", "--config", ROOT / "configs" / "kaggle_tpu.yaml",
                             "--set", "kaggle.username=alice", "--set", "kaggle.source=melanoma-src",
                             "--out", tmp_path / "push")
    assert code == 0, err
    meta = json.loads((tmp_path / "push" / "kernel-metadata.json").read_text())
    assert meta["enable_tpu"] is True and meta["machine_shape"] == "TpuV5E8" and "not pushed" in out


# --------------------------------------------------------------------------------------------------------
# submit


@pytest.fixture
def real_sample(tmp_path):
    sample_path, _ = competition_test_files(tmp_path / "comp")
    sample = pd.read_csv(sample_path, dtype={"image_name": "string"})
    sub = tmp_path / "submission.csv"
    sample.assign(target=0.5).to_csv(sub, index=False)
    return sample_path, sub


def test_submit_validates_then_submits_and_reports_the_score(fake_api, real_sample, capsys):
    sample, sub = real_sample
    code, out, err = run_cli(capsys, "submit", sub, "--message", "b5 384 seed 1", "--sample-submission", sample)
    assert code == 0, err
    assert ("submit", "submission.csv", "b5 384 seed 1", COMP) in fake_api.calls
    assert "status complete, public_score 0.9512" in out


def test_submit_rejects_a_bad_file_before_submitting(fake_api, real_sample, capsys):
    sample, sub = real_sample
    df = pd.read_csv(sub).iloc[1:]
    df.to_csv(sub, index=False)
    code, out, err = run_cli(capsys, "submit", sub, "-m", "x", "--sample-submission", sample)
    assert code == 2 and "1 of the 10982 ids of the sample submission are missing" in err
    assert not [c for c in fake_api.calls if c[0] == "submit"]
    # no sample to validate against: none given, none in paths.data
    code, _, err = run_cli(capsys, "submit", sub, "-m", "x", "--set", f"paths.data={sub.parent / 'none'}")
    assert code == 2 and "pass --sample-submission" in err


def test_submit_waits_only_as_long_as_asked():
    api = FakeApi()
    api.competition_submissions = lambda competition: [SimpleNamespace(
        description="m", status="SubmissionStatus.PENDING", ref=5, public_score="", private_score="",
        error_description="")]
    naps = []
    result = kaggle.submit(api, Path("s.csv"), "m", wait=0.0, sleep=naps.append)
    assert result["status"] == "pending" and result["public_score"] is None and naps == []


# --------------------------------------------------------------------------------------------------------
# notebooks and the README


def test_committed_notebooks_are_generated_from_the_source():
    assert notebooks.build_notebooks(ROOT / "kernels", check=True) == [], "run `melanoma kaggle notebook`"
    import nbformat

    for _, _, name in notebooks.GENERATED:  # valid nbformat 4.5 (cell ids included), as Jupyter reads it
        nbformat.validate(nbformat.read(ROOT / "kernels" / name, as_version=4))


def notebook_commands(name: str) -> list[str]:
    """Each `melanoma(...)` call of the notebook as the command line it runs ({ROOT} in an f-string as $ROOT)."""
    import ast

    def text(node) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if isinstance(node, ast.JoinedStr):
            return "".join(text(v) for v in node.values)
        if isinstance(node, ast.FormattedValue):
            return f"${node.value.id}"
        return f"${node.id}"  # a variable (ROOT)

    nb = json.loads((ROOT / "kernels" / name).read_text())
    commands = []
    for cell in (c for c in nb["cells"] if c["cell_type"] == "code"):
        for node in ast.walk(ast.parse("".join(cell["source"]))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "melanoma":
                args = [text(a) for a in node.args]
                commands.append(" ".join(["melanoma", *(f'"{a}"' if " " in a else a for a in args)]))
    return commands


def test_notebooks_run_the_same_cli_as_the_kaggle_docs():
    section = (ROOT / "docs" / "kaggle.md").read_text()  # the Kaggle and Colab page the README links to
    kaggle_cmds, colab_cmds = notebook_commands(notebooks.NOTEBOOKS["kaggle"]), notebook_commands(notebooks.NOTEBOOKS["colab"])
    assert "melanoma run --config configs/kaggle_tpu.yaml --set stages=folds,train,tabular,blend" in kaggle_cmds
    assert any(c.startswith("melanoma run --config configs/kaggle_tpu.yaml") for c in colab_cmds)
    for cmd in kaggle_cmds + colab_cmds:
        assert cmd in section, f"the notebook runs `{cmd}`, which docs/kaggle.md does not show"
    # and every command the notebooks run parses with the real CLI
    from melanoma.cli import build_parser

    for cmd in kaggle_cmds + colab_cmds:
        build_parser().parse_args(shlex.split(cmd.replace("$", ""))[1:])


def test_commands_that_do_not_talk_to_kaggle_never_import_it(tmp_path):
    """An import hook records any import of the Kaggle client; blend and folds must not trigger it."""
    runs = tmp_path / "r"
    runs.mkdir()
    pd.DataFrame({"image_name": ["A", "B", "C", "D"], "target": [0, 1, 0, 1], "pred": [0.1, 0.9, 0.2, 0.7],
                  "fold": [0, 0, 1, 1]}).to_csv(runs / "oof.csv", index=False)
    pd.DataFrame({"image_name": ["T1", "T2"], "target": [0.3, 0.6]}).to_csv(runs / "test_pred.csv", index=False)
    script = f"""
import sys
seen = []
class Hook:
    def find_spec(self, name, path=None, target=None):
        if name == "kaggle" or name.startswith("kaggle."):
            seen.append(name)
        return None
sys.meta_path.insert(0, Hook())
from melanoma.cli import main
assert main(["blend", "--runs", {str(runs)!r}, "--out", {str(tmp_path / "s.csv")!r}]) == 0
assert main(["folds", "--data", {str(ROOT / "data" / "demo")!r}, "--out", {str(tmp_path / "f.csv")!r}]) == 0
assert main(["kaggle", "notebook", "--check", "--kernels", {str(ROOT / "kernels")!r}]) == 0
assert seen == [] and "kaggle" not in sys.modules, seen
import os
os.environ.update(KAGGLE_USERNAME="u", KAGGLE_KEY="k")
main(["kaggle", "status", "u/x"])  # a command that does talk to Kaggle: the hook sees the import
assert seen, "the hook saw nothing: the test would prove nothing"
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stdout + res.stderr


# --------------------------------------------------------------------------------------------------------
# ISIC 2024: the models dataset and the inference notebook


class DatasetApi(FakeApi):
    """FakeApi plus the dataset calls of `kaggle upload-models`; `existing` names the datasets already there."""

    def __init__(self, existing=()):
        super().__init__()
        self.existing = set(existing)

    def dataset_status(self, ref):
        self.calls.append(("dataset_status", ref))
        if ref not in self.existing:
            raise ValueError("404 Not Found")
        return "ready"

    def dataset_create_new(self, folder, public=False, quiet=False, dir_mode="skip"):
        meta = json.loads((Path(folder) / "dataset-metadata.json").read_text())
        self.calls.append(("create", meta["id"], public, dir_mode, sorted(p.name for p in Path(folder).iterdir())))
        return SimpleNamespace(error="", url=f"https://www.kaggle.com/datasets/{meta['id']}")

    def dataset_create_version(self, folder, version_notes, quiet=False, dir_mode="skip"):
        self.calls.append(("version", version_notes, dir_mode))
        return SimpleNamespace(error="", url="")


def _tabular_run(root: Path) -> Path:
    """A tabular run folder with saved models (no image runs), as `melanoma tabular` writes it."""
    run = root / "tab"
    (run / "models").mkdir(parents=True)
    (run / "models" / "models.json").write_text(json.dumps({"format_version": 1, "members": ["member0.joblib"],
                                                            "image_runs": [], "features": []}))
    (run / "models" / "member0.joblib").write_bytes(b"x")
    (run / "run.json").write_text(json.dumps({"package": "melanoma", "stage": "tabular"}))
    (run / "metrics.json").write_text(json.dumps({"model": "lgbm"}))
    return run


@pytest.mark.parametrize("existing, call", [((), "create"), (("alice/melanoma-isic2024-models",), "version")])
def test_upload_models_creates_or_versions_a_private_dataset(no_credentials, monkeypatch, tmp_path, capsys,
                                                             existing, call):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    api = DatasetApi(existing)
    monkeypatch.setattr(kaggle, "make_api", lambda: api)
    run = _tabular_run(tmp_path)
    code, out, err = run_cli(capsys, "kaggle", "upload-models", run, "--out", tmp_path / "bundle")
    assert code == 0, err
    bundle = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert bundle["tabular"] == "tabular" and bundle["image_models"] == [] and bundle["tabular_model"] == "lgbm"
    assert (tmp_path / "bundle" / "tabular" / "models" / "member0.joblib").is_file()
    done = [c for c in api.calls if c[0] == call]
    assert len(done) == 1 and "alice/melanoma-isic2024-models" in out
    if call == "create":
        assert done[0][1:4] == ("alice/melanoma-isic2024-models", False, "zip")  # private; folders as zips
        assert "dataset-metadata.json" in done[0][4] and "tabular" in done[0][4]


def test_upload_models_refuses_what_is_no_run_before_any_upload(fake_api, tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    code, _, err = run_cli(capsys, "kaggle", "upload-models", tmp_path / "nothing", "--out", tmp_path / "b")
    assert code == 2 and "not an image run" in err and err.count("\n") == 1
    assert not any(c[0] in ("create", "version") for c in fake_api.calls)


def test_push_isic2024_inference_notebook_is_offline(no_credentials, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    base = ["kaggle", "push", "--dry-run", "--competition", "isic2024", "--set", "kaggle.username=alice",
            "--out", tmp_path / "push"]
    code, _, err = run_cli(capsys, *base)
    assert code != 0 and "kaggle.wheels" in err  # offline: the wheels dataset is required
    code, out, err = run_cli(capsys, *base, "--set", "kaggle.wheels=melanoma-wheels", "--bundle", "bob/models")
    assert code == 0, err
    meta = json.loads((tmp_path / "push" / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["competition_sources"] == ["isic-2024-challenge"]
    assert meta["dataset_sources"] == ["alice/melanoma-wheels", "bob/models"]
    assert meta["id"] == "alice/melanoma-isic2024-inference" and meta["machine_shape"] == "NvidiaTeslaT4"
    nb = json.loads((tmp_path / "push" / meta["code_file"]).read_text())
    code_text = "".join("".join(c["source"]) for c in nb["cells"])
    assert 'WHEELS = "/kaggle/input/datasets/alice/melanoma-wheels"' in code_text
    assert 'BUNDLE = "/kaggle/input/datasets/bob/models"' in code_text
    assert '"--no-index", "--find-links", WHEELS' in code_text and 'melanoma("infer"' in code_text
    code, _, err = run_cli(capsys, *base, "--kind", "training")
    assert code != 0 and "only the inference notebook" in err
