"""The command line over the fake API and storage: a bar on a terminal, plain lines otherwise,
one summary line, exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import responses

from ankicollab_media import cli

from .fakes import API, FakeServer


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANKICOLLAB_MEDIA_API", API)
    monkeypatch.setenv("ANKICOLLAB_MEDIA_TOKEN", "t")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_download_on_a_terminal_draws_a_bar_and_prints_one_summary(
    server: FakeServer, tmp_path: Path
) -> None:
    server.files = {f"f{i}.png": b"%d" % i for i in range(5)}
    server.unavailable = {"gone.png": "missing"}
    out, err = io.StringIO(), Terminal()
    code = cli.main(["download", "deck1", str(tmp_path / "m")], stdout=out, stderr=err)
    assert code == 0
    assert out.getvalue() == "5 downloaded, 0 already present, 1 unavailable\n"
    assert "\rdownloading [" in err.getvalue() and "6/6 files" in err.getvalue()
    assert "unavailable gone.png: missing" in err.getvalue()


def test_plain_lines_off_a_terminal_and_json_for_scripts(server: FakeServer, tmp_path: Path) -> None:
    server.files = {"a.png": b"a"}
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["--json", "download", "deck1", str(tmp_path / "m")], stdout=out, stderr=err) == 0
    assert json.loads(out.getvalue())["downloaded"] == ["a.png"]
    assert "\r" not in err.getvalue() and "downloading: 1/1 files" in err.getvalue()


def test_upload_exits_1_when_a_file_is_rejected_or_failed(server: FakeServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(b"a")
    (src / "big.png").write_bytes(b"b")
    server.rejected = {"big.png": "too_large"}
    out, err = io.StringIO(), io.StringIO()
    assert (
        cli.main(["-q", "upload", "deck1", str(src), str(src / "missing.png")], stdout=out, stderr=err) == 1
    )
    assert out.getvalue() == "1 uploaded, 0 already stored, 1 rejected, 1 failed\n"
    assert "rejected big.png: too_large" in err.getvalue()
    assert "failed missing.png: cannot read the file" in err.getvalue()


def test_whole_call_errors_exit_2_in_plain_words(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.rsps.replace(
        responses.POST,
        f"{API}/v1/downloads",
        status=403,
        json={"error": {"code": "forbidden", "message": "the token does not maintain this deck"}},
    )
    err = io.StringIO()
    assert cli.main(["download", "deck1", str(tmp_path / "m")], stdout=io.StringIO(), stderr=err) == 2
    assert err.getvalue() == "error: the token does not maintain this deck (forbidden)\n"
    monkeypatch.delenv("ANKICOLLAB_MEDIA_TOKEN")
    err = io.StringIO()
    assert cli.main(["download", "deck1", str(tmp_path / "m")], stdout=io.StringIO(), stderr=err) == 2
    assert "ANKICOLLAB_MEDIA_TOKEN" in err.getvalue()
