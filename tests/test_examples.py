"""The examples run end to end (small sizes) and write their figures."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, figures, options", [
    ("reconstruct.py", ["reconstruct.png"], ["--size", "64"]),
    ("custom_operator.py", ["custom_operator.png"], ["--size", "64"]),
    ("tv_reconstruction.py", ["tv_deblur.png", "tv_ct.png", "tv_mri.png"], ["--size", "64", "--max-iter", "150"]),
    ("sensor_array_calibration.py", ["sensor_array_calibration.png", "sensor_array_phase_transition.png"],
     ["--size", "64", "--phase-transition", "--trials", "2", "--pt-max-iter", "300", "--no-progress"]),
    ("learn_foe.py", ["learn_foe.png"], ["--size", "32", "--filters", "6", "--filter-size", "3", "--max-iter", "3",
                                         "--tv-max-iter", "5", "--no-progress"]),
    ("generative_priors.py", ["generative_priors.png"], ["--faces", "2", "--steps", "10"]),
    ("learned_priors.py", ["learned_priors.png"], ["--size", "64", "--steps", "5"]),
    ("lpn_pnp.py", ["lpn_pnp.png"], ["--size", "64", "--max-iter", "10", "--images", "chelsea"]),
])
def test_example_writes_figures(script, figures, options, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--out", str(tmp_path), *options],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PSNR" in done.stdout
    for figure in figures:
        assert (tmp_path / figure).stat().st_size > 10_000
    assert not list(tmp_path.glob(".*.png")), "temporary files left behind"
