"""The talk builds from the code and its measurements, and the PDF holds every slide."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("chromium", "pdftotext", "pdfinfo")

pytestmark = pytest.mark.slow


def _tools_or_skip() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"needs {', '.join(missing)} (apt-get install -y chromium poppler-utils)")
    assert not missing, f".ci/run must install {missing}"


def test_talk_builds_to_html_and_pdf_with_every_slide(tmp_path: Path) -> None:
    _tools_or_skip()
    result = subprocess.run([str(ROOT / "docs/talk/build"), str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    titles = json.loads((tmp_path / "titles.json").read_text())
    html = (tmp_path / "talk.html").read_text()
    assert len(titles) >= 12

    pages = subprocess.run(["pdfinfo", str(tmp_path / "talk.pdf")], capture_output=True,
                           text=True, check=True).stdout
    assert int(re.search(r"^Pages:\s+(\d+)", pages, re.M).group(1)) == len(titles)
    text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "talk.pdf"), "-"],
                          capture_output=True, text=True, check=True).stdout
    flat = " ".join(text.split())
    for title in titles:
        assert " ".join(title.split()) in flat, f"slide {title!r} missing from the PDF"

    # Figures: the module map from the imports, the timeline from this build's scenario run.
    assert 'data-figure="modules"' in html and "every import points left" in html
    assert 'data-figure="timeline"' in html and "data:image/png;base64," in html
    # Snippets are real source, cut by name.
    for path, name in re.findall(r'class="where">([^ ]+) · ([\w.]+)<', html):
        assert name.split(".")[-1] in (ROOT / path).read_text()
    assert "def diff_children" in html
    # Numbers come from the run: the scenario report's acknowledged count is on a slide.
    scenario = json.loads((tmp_path / "scenario.json").read_text())
    assert f"{scenario['acknowledged']:,} acknowledged" in flat
    # Self-contained: nothing is fetched at view time.
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "{{" not in html
