"""The client on its own: no token on the command line, HTTP only (no service package imported), the
files it collects and how it decides what a job lacks, the config file it writes."""
from __future__ import annotations

import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from client.api import ApiError
from client.cli import cmd_configure, exit_code_for
from client.config import load_config
from client.files import InputError, collect
from client.upload import missing_files, parts

VENV_BIN = Path(sys.executable).parent
SERVICE_PACKAGES = ("web", "tasks", "db", "training", "models", "config", "workers", "bench", "scripts")


@pytest.mark.parametrize("argv", [["--token", "s3cr3t-value", "status", "1"],
                                  ["status", "1", "--token=s3cr3t-value"],
                                  ["submit", "--url", "http://x", "a-folder"],
                                  ["--tok", "s3cr3t-value", "status", "1"],
                                  ["status", "--toke=s3cr3t-value", "1"]])
def test_a_token_or_url_on_the_command_line_is_refused_without_echoing_it(argv, tmp_path):
    done = subprocess.run([str(VENV_BIN / "mri-classify"), *argv], capture_output=True, text=True, timeout=60,
                          env={"PATH": str(VENV_BIN), "HOME": str(tmp_path), "MRI_URL": "http://127.0.0.1:9",
                               "MRI_TOKEN": "t"})
    assert done.returncode == 2, done.stderr
    assert "never taken on the command line" in done.stderr and "MRI_TOKEN" in done.stderr
    assert "s3cr3t-value" not in done.stderr + done.stdout


def test_the_client_imports_no_service_package():
    code = ("import sys, client.cli, client.upload, client.api, client.files, client.config; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({SERVICE_PACKAGES!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_collect_keeps_folder_names_zip_paths_and_skips_litter(tmp_path):
    study = tmp_path / "patient-17"
    (study / "t1").mkdir(parents=True)
    (study / "t1" / "a.dcm").write_bytes(b"a")
    (study / "b.png").write_bytes(b"bb")
    (study / "Thumbs.db").write_bytes(b"x")
    (study / "__MACOSX").mkdir()
    (study / "__MACOSX" / "._b.png").write_bytes(b"x")
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("p18/c.jpg", b"ccc")
        handle.writestr("p18/.DS_Store", b"x")
    loose = tmp_path / "d.png"
    loose.write_bytes(b"dddd")
    files = collect([str(study), str(archive), str(loose)])
    assert [(f.path, f.size) for f in files] == [("patient-17/b.png", 2), ("patient-17/t1/a.dcm", 1),
                                                 ("p18/c.jpg", 3), ("d.png", 4)]
    assert files[2].read() == b"ccc"
    # Zips that cannot be expanded here go whole, for the service to refuse with its own reason
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as handle:
        handle.writestr("../x.png", b"x")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with zipfile.ZipFile(tmp_path / "nested.zip", "w") as handle:
        handle.writestr("inner.zip", b"x")
    whole = collect([str(tmp_path / "evil.zip"), str(tmp_path / "broken.zip"), str(tmp_path / "nested.zip")])
    assert [(f.path, f.member) for f in whole] == [("evil.zip", None), ("broken.zip", None), ("nested.zip", None)]
    assert whole[1].read() == b"PK\x03\x04 not really a zip"
    with pytest.raises(InputError, match="no such file or folder"):
        collect([str(tmp_path / "missing.zip")])


def test_missing_files_match_path_and_hash_then_hash_alone(tmp_path):
    for name, data in (("a", b"1"), ("b", b"2"), ("c", b"1"), ("d", b"3")):
        (tmp_path / "s").mkdir(exist_ok=True)
        (tmp_path / "s" / name).write_bytes(data)
    files = collect([str(tmp_path / "s")])
    by_path = {f.path: f for f in files}
    held = [{"path": "s/a", "sent_sha256": by_path["s/a"].sha256},
            # the service cleaned this path: matched by content
            {"path": "s/b~renamed", "sent_sha256": by_path["s/b"].sha256}]
    # s/c has the same bytes as s/a but the job holds that content once: it is still missing
    assert [f.path for f in missing_files(files, held)] == ["s/c", "s/d"]
    assert [len(p) for p in parts(files, max_files=3, max_bytes=10**6)] == [3, 1]
    assert [len(p) for p in parts(files, max_files=10, max_bytes=2)] == [2, 2]


def test_configure_writes_a_private_file_that_load_config_reads(tmp_path):
    environ = {"HOME": str(tmp_path)}
    answers = iter(["http://10.0.0.5:5000/"])
    assert cmd_configure(environ, ask=lambda _: next(answers), ask_secret=lambda _: "tok-123") == 0
    path = tmp_path / ".config" / "mri-classify" / "config"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    config = load_config(environ)
    assert (config.url, config.token, config.token_from) == ("http://10.0.0.5:5000", "tok-123", str(path))


@pytest.mark.parametrize("status, code", [(401, 3), (403, 3), (404, 4), (400, 5), (409, 5), (413, 5), (415, 5),
                                          (422, 5), (503, 6), (429, 6), (500, 1)])
def test_exit_codes(status, code):
    assert exit_code_for(ApiError(status, "x", "y", "GET", "/")) == code
