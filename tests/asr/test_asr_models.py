"""`callctl models`: fetch from a real local HTTP server (progress, checksum, unzip), offline
errors, verify, list. No test touches the internet."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from callctl.asr.models import CATALOG, ModelFetchError, ModelInfo, fetch, verify
from callctl.cli import cli_main


def model_zip(name: str, files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for rel, data in files.items():
            z.writestr(f"{name}/{rel}", data)
    return buf.getvalue()


GOOD = {"am/final.mdl": b"mdl" * 1000, "conf/model.conf": b"--min-active=200\n",
        "README": b"test model"}


@pytest.fixture
def http_files() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A real HTTP server on loopback serving an in-memory {path: bytes} map."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files
    server.shutdown()
    server.server_close()


def test_fetch_checks_sha256_unzips_and_verifies(tmp_path: Path, http_files: tuple) -> None:
    base, files = http_files
    data = model_zip("m1", GOOD)
    files["/m1.zip"] = data
    out = io.StringIO()
    info = ModelInfo("m1", base + "/m1.zip", 1, hashlib.sha256(data).hexdigest(), "t")
    path = fetch(info, tmp_path, out=out)
    assert path == tmp_path / "m1"
    assert (path / "am" / "final.mdl").read_bytes() == GOOD["am/final.mdl"]
    assert "100.0%" in out.getvalue()  # the progress bar reached the end
    assert "Vosk model OK" in verify(path)
    assert not list(tmp_path.glob(".*part"))
    # a second fetch finds it installed and does not download
    files.clear()
    assert fetch(info, tmp_path, out=out) == path


def test_fetch_rejects_checksum_mismatch(tmp_path: Path, http_files: tuple) -> None:
    base, files = http_files
    files["/m2.zip"] = model_zip("m2", GOOD)
    info = ModelInfo("m2", base + "/m2.zip", 1, "0" * 64, "t")
    with pytest.raises(ModelFetchError, match="checksum mismatch"):
        fetch(info, tmp_path, out=io.StringIO())
    assert not (tmp_path / "m2").exists()
    assert not list(tmp_path.iterdir())  # partial download removed


def test_fetch_without_published_checksum_records_it(tmp_path: Path, http_files: tuple) -> None:
    base, files = http_files
    data = model_zip("m3", GOOD)
    files["/m3.zip"] = data
    out = io.StringIO()
    path = fetch(ModelInfo("m3", base + "/m3.zip", 1, None, "t"), tmp_path, out=out)
    digest = hashlib.sha256(data).hexdigest()
    assert digest in out.getvalue()
    assert (path / ".callctl-archive.sha256").read_text().startswith(digest)


@pytest.mark.parametrize("payload,match", [
    (b"this is not a zip", "not a zip archive"),
    (model_zip("m4", {"README": b"x"}), "does not hold a Vosk model"),
])
def test_fetch_rejects_bad_archives(tmp_path: Path, http_files: tuple, payload: bytes,
                                    match: str) -> None:
    base, files = http_files
    files["/m4.zip"] = payload
    with pytest.raises(ModelFetchError, match=match):
        fetch(ModelInfo("m4", base + "/m4.zip", 1, None, "t"), tmp_path, out=io.StringIO())
    assert not (tmp_path / "m4").exists()


def test_offline_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on: "no network"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = cli_main(["models", "fetch", "mirror-model", "--url",
                   f"http://127.0.0.1:{port}/x.zip", "--models-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "cannot download" in err and "No network here?" in err


def test_cli_list_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["models", "list", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in CATALOG:
        assert name in out
    assert cli_main(["models", "verify", "nope", "--models-dir", str(tmp_path)]) == 1
    assert str(tmp_path / "nope") in capsys.readouterr().err
    assert cli_main(["models", "fetch", "no-such-model", "--models-dir", str(tmp_path)]) == 2


def test_catalog_urls_are_official() -> None:
    for m in CATALOG.values():
        if m.member is not None:          # a file taken out of a wheel on PyPI (Smart Turn)
            assert m.url.startswith("https://files.pythonhosted.org/packages/")
            assert m.url.endswith(".whl") and m.sha256 is not None and len(m.sha256) == 64
            continue
        assert m.url.startswith("https://alphacephei.com/vosk/models/") and m.url.endswith(
            f"/{m.name}.zip")
        assert m.sha256 is None or len(m.sha256) == 64
