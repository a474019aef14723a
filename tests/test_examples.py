"""The examples run end to end (small sizes) and write their figures."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, figure", [("reconstruct.py", "reconstruct.png"),
                                            ("custom_operator.py", "custom_operator.png")])
def test_example_writes_figure(script, figure, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--size", "64", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PSNR" in done.stdout
    assert (tmp_path / figure).stat().st_size > 10_000
    assert not list(tmp_path.glob(".*.png")), "temporary files left behind"
