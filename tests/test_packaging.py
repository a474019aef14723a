"""The shipped models are package data: a regular (non-editable) install carries them and every `pretrained(name)`
loads from any working directory."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "imaging" / "weights"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "IMAGING_NO_EXT": "1"}  # the weights, not the compiled ops, are under test here
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, env=env, capture_output=True, timeout=600)
    return next(out.glob("imaging-*.whl"))


def test_the_wheel_carries_every_shipped_file(wheel):
    shipped = {str(p.relative_to(ROOT)) for p in WEIGHTS.rglob("*") if p.is_file()}
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
    assert shipped and shipped <= packed, sorted(shipped - packed)


def test_a_regular_install_loads_every_model_by_name_from_elsewhere(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    code = """
import imaging
from imaging.priors import DiffusionPrior, FieldOfExperts, FlowPrior, UnrolledFoE, pretrained_lpn
assert imaging.__file__.startswith(%r), imaging.__file__
for name in ("natural", "faces"):
    DiffusionPrior.pretrained(name); FlowPrior.pretrained(name)
for name in ("natural", "natural-wide", "image", "digits", "laplacian-pm"):
    pretrained_lpn(name)
for name in ("denoise-sigma25", "natural-sigma25"):
    FieldOfExperts.pretrained(name)
UnrolledFoE.pretrained("natural-sigma25-student")
print("ok")
""" % str(target)
    env = {**os.environ, "PYTHONPATH": str(target), "IMAGING_NO_EXT": "1"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-2000:]


def test_a_missing_optional_package_names_its_extra(monkeypatch):
    import sys

    import pytest

    from imaging._optional import require

    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if diffusers were not installed
    with pytest.raises(ModuleNotFoundError, match=r"DiffusionPrior.from_pretrained needs the optional package "
                                                  r"diffusers: pip install 'imaging\[generative\]'"):
        require("diffusers", "DiffusionPrior.from_pretrained")
    assert require("numpy", "anything").__name__ == "numpy"
