"""The Python blocks of README.md and docs/*.md marked `<!-- test -->` run as written. A marker
`<!-- test: name=value, ... -->` shortens the block for the test by setting those keyword arguments (e.g. fewer
training steps); it runs in a temporary folder holding `my_images/` (three small PNG pictures)."""
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- test(?::\s*(?P<options>[^>]*?))?\s*-->\s*```python\n(?P<code>.*?)```", re.S)


def blocks():
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, match in enumerate(MARKER.finditer(path.read_text())):
            found.append(pytest.param(match["code"], match["options"] or "", id=f"{path.name}-{number}"))
    return found


def shorten(code: str, options: str) -> str:
    for option in filter(None, (o.strip() for o in options.split(","))):
        name, value = (part.strip() for part in option.split("="))
        code, count = re.subn(rf"\b{name}=[^,)\n]+", f"{name}={value}", code)
        assert count, f"marker option {name!r} does not occur in the block"
    return code


@pytest.mark.parametrize("code, options", blocks())
def test_documented_block_runs(code, options, tmp_path, monkeypatch):
    import imageio.v3 as iio

    (tmp_path / "my_images").mkdir()
    for k in range(3):
        picture = np.random.default_rng(k).integers(0, 256, (40, 48), dtype=np.uint8)
        iio.imwrite(tmp_path / "my_images" / f"{k}.png", picture)
    monkeypatch.chdir(tmp_path)
    exec(compile(shorten(code, options), "<documented block>", "exec"), {"__name__": "__readme__"})


def test_there_are_tested_blocks():
    assert len(blocks()) >= 2
