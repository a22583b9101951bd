"""Every script in examples/ runs at tiny size (SYSID_MSSTCN_EXAMPLE_TINY=1)."""

from __future__ import annotations

import ast
import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
NEEDS_DATA = {
    "quickstart_cascaded_tanks.py": "nonlinear_benchmarks",
    "handwriting_generation.py": "iam_ondb",
    "speech_elbo.py": "blizzard",
}


def test_the_four_examples_exist():
    assert set(SCRIPTS) >= {
        "quickstart_cascaded_tanks.py",
        "pipeline_grid_search.py",
        "handwriting_generation.py",
        "speech_elbo.py",
    }


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_has_a_title_docstring_and_a_tiny_switch(script):
    source = (EXAMPLES / script).read_text()
    doc = ast.get_docstring(ast.parse(source))
    assert doc and len(doc.splitlines()[0]) < 80
    assert "SYSID_MSSTCN_EXAMPLE_TINY" in source


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_tiny(script, tmp_path, monkeypatch, capsys, request):
    if script in NEEDS_DATA:
        shared = request.getfixturevalue("shared_data")
        if not (shared / NEEDS_DATA[script]).exists():
            pytest.skip(f"{NEEDS_DATA[script]} not in the shared data folder")
    monkeypatch.setenv("SYSID_MSSTCN_EXAMPLE_TINY", "1")
    monkeypatch.setenv("SYSID_MSSTCN_EXAMPLE_OUTPUT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    out = capsys.readouterr().out
    assert out.strip()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    if script != "pipeline_grid_search.py":
        assert any(p.suffix in (".png", ".wav") for p in written), written
