"""The wheel builds and is pure; the vendored folder is only sources; the package imports nothing
of Anki outside its Anki module, and nothing beyond the standard library and requests."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[1]
PACKAGE = CLIENT / "ankicollab_media"
STDLIB = set(sys.stdlib_module_names)


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_anki_module_imports_anki_and_nothing_beyond_requests() -> None:
    for f in PACKAGE.glob("*.py"):
        third_party = imports(f) - STDLIB - {"ankicollab_media"}
        allowed = {"requests"} | ({"anki", "aqt"} if f.name == "anki.py" else set())
        assert third_party <= allowed, f"{f.name} imports {third_party - allowed}"


def test_vendoring_copies_sources_only(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(CLIENT / "vendor.py"), str(tmp_path / "addon" / "vendor")],
        check=True,
        capture_output=True,
        text=True,
    )
    target = Path(out.stdout.strip())
    names = sorted(p.name for p in target.iterdir())
    assert names == sorted(p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.name == "py.typed")
    probe = "import sys; sys.path.insert(0, sys.argv[1]); import ankicollab_media; print(ankicollab_media.MediaClient)"
    subprocess.run([sys.executable, "-c", probe, str(target.parent)], check=True, capture_output=True)


@pytest.mark.slow
def test_the_wheel_is_pure_python(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(CLIENT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as z:
        files = z.namelist()
    assert "ankicollab_media/py.typed" in files and "ankicollab_media/anki.py" in files
    assert not [f for f in files if f.endswith((".so", ".pyd", ".pyc"))]
    assert not [f for f in files if f.startswith("tests/")]
