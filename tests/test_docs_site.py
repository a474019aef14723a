"""The documentation site (mkdocs-material + mkdocstrings, `make docs`) builds in strict mode: a broken link, a
missing page or an unresolvable API reference fails the build, so the docs cannot drift from the code."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
    pytest.importorskip(module, reason="the docs tools are the [docs] extra (make test installs them)")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
                          timeout=600)


def test_site_builds_strict_with_the_api_reference(tmp_path):
    result = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "WARNING" not in result.stderr, result.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "solvers" / "index.html").read_text()
    for name in ("RedDiff", "least_squares", "Result", "PnPADMM"):  # generated from the docstrings
        assert f'id="imaging.solvers.{name}"' in api
    gallery = (tmp_path / "site" / "gallery" / "index.html").read_text()
    assert len(re.findall(r"<img ", gallery)) >= 6


def test_a_broken_reference_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    subprocess.run(["cp", "-r", str(ROOT / "docs"), str(docs)], check=True)
    (docs / "index.md").write_text((docs / "index.md").read_text() + "\nSee [a page that is gone](gone.md).\n")
    config = (ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}") \
        .replace("paths: [.]", f"paths: [{ROOT}]")
    (tmp_path / "mkdocs.yml").write_text(config)
    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0 and "gone.md" in result.stderr
