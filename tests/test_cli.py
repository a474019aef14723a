"""The installed `imaging` command end to end: simulate, reconstruct (against the library call), denoise, resume,
a corrupt input, two processes under torchrun, info without the compiled extension, --help everywhere."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import imaging
from imaging.data import load_image, write_image

BIN = Path(sys.executable).parent
IMAGING = BIN / "imaging"
pytestmark = pytest.mark.skipif(not IMAGING.exists(), reason="the imaging console script is not installed")


def cli(*args, cwd, env=None, check=True):
    result = subprocess.run([str(IMAGING), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean")
    for name in ("camera", "coins", "moon", "text", "coffee", "chelsea"):
        write_image(folder / f"{name}.png", load_image(name, size=32, channels=1)[0])
    return folder


@pytest.mark.parametrize("operator", [["--operator", "blur", "--blur-sigma", "1.5"],
                                      ["--operator", "inpaint", "--missing", "0.4"],
                                      ["--operator", "downsample", "--factor", "2"],
                                      ["--operator", "cs", "--ratio", "0.5", "--image-size", "32", "32"]],
                         ids=["blur", "inpaint", "downsample", "cs"])
def test_reconstruct_matches_the_library_call(operator, clean, tmp_path):
    from imaging.cli import build_operator
    from imaging.operators import FiniteDifference

    cli("simulate", clean, *operator, "--noise-level", "0.01", "--out", tmp_path / "y", cwd=tmp_path)
    cli("reconstruct", tmp_path / "y", "--operator-json", tmp_path / "y" / "imaging-operator.json", "--method", "lsq",
        "--noise-level", "0.01", "--format", "npy", "--truth", clean, "--out", tmp_path / "x", "--no-progress",
        cwd=tmp_path)
    settings = json.loads((tmp_path / "y" / "imaging-operator.json").read_text())
    A = build_operator(settings, (1, 32, 32))
    y = torch.from_numpy(np.load(tmp_path / "y" / "camera.npy"))
    y = y.reshape(1, -1) if settings["operator_name"] == "cs" else y[None]
    expected = imaging.least_squares(A, y, lam="auto", noise_level=0.01, regulariser=FiniteDifference()).x[0]
    np.testing.assert_allclose(np.load(tmp_path / "x" / "camera.npy"), expected.numpy(), atol=1e-10)
    rows = json.loads((tmp_path / "x" / "metrics.json").read_text())
    assert [r["status"] for r in rows] == ["ok"] * 6 and all(r["psnr"] > 15 for r in rows)


def test_a_corrupt_input_is_reported_and_a_second_run_resumes(clean, tmp_path):
    cli("simulate", clean, "--operator", "inpaint", "--out", tmp_path / "y", cwd=tmp_path)
    (tmp_path / "y" / "broken.npy").write_text("not an array")
    np.save(tmp_path / "y" / "nan.npy", np.full((32, 32), np.nan))
    args = ("reconstruct", tmp_path / "y", "--operator", "inpaint", "--method", "lsq", "--noise-level", "0.01",
            "--out", tmp_path / "x", "--no-progress")
    first = cli(*args, cwd=tmp_path, check=False)
    assert first.returncode != 0 and "broken.npy" in first.stderr and "nan.npy" in first.stderr
    rows = {r["input"]: r for r in json.loads((tmp_path / "x" / "metrics.json").read_text())}
    assert rows["broken.npy"]["status"] == rows["nan.npy"]["status"] == "error" and len(rows) == 8
    assert sum(r["status"] == "ok" for r in rows.values()) == 6
    assert not list((tmp_path / "x").glob(".*"))  # no temporary or partial file left
    stamp = (tmp_path / "x" / "camera.png").stat().st_mtime_ns
    second = cli(*args, cwd=tmp_path, check=False)
    rows = {r["input"]: r for r in json.loads((tmp_path / "x" / "metrics.json").read_text())}
    assert second.returncode != 0 and rows["camera.npy"]["status"] == "skipped (exists)"
    assert (tmp_path / "x" / "camera.png").stat().st_mtime_ns == stamp


def test_two_processes_under_torchrun_give_one_process_outputs(clean, tmp_path):
    cli("simulate", clean, "--operator", "blur", "--out", tmp_path / "y", cwd=tmp_path)
    common = ["reconstruct", tmp_path / "y", "--operator", "blur", "--method", "lsq", "--noise-level", "0.01",
              "--format", "npy", "--truth", clean, "--no-progress"]
    cli(*common, "--out", tmp_path / "one", cwd=tmp_path)
    run = subprocess.run([str(BIN / "torchrun"), "--nproc-per-node", "2", "-m", "imaging.cli", *map(str, common),
                          "--out", str(tmp_path / "two")], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in (p.name for p in (tmp_path / "one").glob("*.npy")):
        np.testing.assert_array_equal(np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(json.loads((tmp_path / "one" / "metrics.json").read_text())) == \
        strip(json.loads((tmp_path / "two" / "metrics.json").read_text()))


def test_two_nodes_under_torchrun_give_one_process_outputs(clean, tmp_path):
    """Two torchrun "nodes" (one process each) on this machine, meeting at a c10d rendezvous as nodes of a cluster
    with a shared file system would: the same outputs and metrics as one process."""
    import socket

    cli("simulate", clean, "--operator", "inpaint", "--missing", "0.3", "--out", tmp_path / "y", cwd=tmp_path)
    common = ["reconstruct", tmp_path / "y", "--operator", "inpaint", "--missing", "0.3", "--method", "tv",
              "--noise-level", "0.01", "--format", "npy", "--truth", clean, "--no-progress"]
    cli(*common, "--out", tmp_path / "one", cwd=tmp_path)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    nodes = [subprocess.Popen([str(BIN / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
                               "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "imaging.cli",
                               *map(str, common), "--out", str(tmp_path / "two")], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    names = sorted(p.name for p in (tmp_path / "one").glob("*.npy"))
    assert names == sorted(p.name for p in (tmp_path / "two").glob("*.npy")) and len(names) == 6
    for name in names:
        np.testing.assert_array_equal(np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(json.loads((tmp_path / "one" / "metrics.json").read_text())) == \
        strip(json.loads((tmp_path / "two" / "metrics.json").read_text()))


def test_a_user_operator_by_module_and_class(clean, tmp_path):
    (tmp_path / "my_ops.py").write_text(
        "import torch\nfrom imaging.operators import LinearOperator\n\n"
        "class Smear(LinearOperator):\n"
        "    def __init__(self, shift=1):\n        super().__init__()\n        self.shift = shift\n\n"
        "    def forward(self, x):\n        return (x + torch.roll(x, self.shift, dims=-1)) / 2\n")
    op = ["--operator", "my_ops:Smear", "--operator-arg", "shift=2"]
    cli("simulate", clean, *op, "--out", tmp_path / "y", cwd=tmp_path)
    cli("reconstruct", tmp_path / "y", *op, "--method", "tv", "--noise-level", "0.01", "--truth", clean, "--out",
        tmp_path / "x", "--no-progress", cwd=tmp_path)
    rows = json.loads((tmp_path / "x" / "metrics.json").read_text())
    assert all(r["status"] == "ok" and r["psnr"] > 20 for r in rows)


def test_denoise_and_a_diffusion_method(clean, tmp_path):
    cli("simulate", clean, "--operator", "identity", "--noise-level", "0.1", "--out", tmp_path / "y", cwd=tmp_path)
    cli("denoise", tmp_path / "y", "--method", "ddpm", "--noise-level", "0.1", "--truth", clean, "--out",
        tmp_path / "d", "--no-progress", cwd=tmp_path)
    rows = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert all(r["psnr"] > 22 for r in rows)  # noisy input: 20 dB
    cli("denoise", tmp_path / "y", "--method", "foe", "--noise-level", "0.1", "--truth", clean, "--out",
        tmp_path / "f", "--no-progress", cwd=tmp_path)
    assert all(r["psnr"] > 22 for r in json.loads((tmp_path / "f" / "metrics.json").read_text()))
    cli("simulate", clean, "--operator", "inpaint", "--out", tmp_path / "m", cwd=tmp_path)
    for batch in ("1", "4"):  # one seed per input: batching does not change a stochastic method's outputs
        cli("reconstruct", tmp_path / "m", "--operator", "inpaint", "--method", "ddrm", "--steps", "10",
            "--noise-level", "0.01", "--batch-size", batch, "--format", "npy", "--out", tmp_path / f"r{batch}",
            "--no-progress", cwd=tmp_path)
    assert len(list((tmp_path / "r1").glob("*.npy"))) == 6
    for path in (tmp_path / "r1").glob("*.npy"):
        assert np.allclose(np.load(path), np.load(tmp_path / "r4" / path.name), atol=1e-5)


def test_pnp_with_the_field_of_experts_beats_tv_on_inpainting(clean, tmp_path):
    """--method pnp-foe (PnP-ADMM, the shipped Student-t FoE as the denoiser, ρ from the noise level) against tv."""
    some = tmp_path / "clean"
    some.mkdir()
    for name in ("camera", "coins", "chelsea"):
        (some / f"{name}.png").write_bytes((clean / f"{name}.png").read_bytes())
    cli("simulate", some, "--operator", "inpaint", "--noise-level", "0.01", "--out", tmp_path / "y", cwd=tmp_path)
    mean_psnr = {}
    for method in ("tv", "pnp-foe"):
        cli("reconstruct", tmp_path / "y", "--operator-json", tmp_path / "y" / "imaging-operator.json", "--method",
            method, "--noise-level", "0.01", "--truth", some, "--out", tmp_path / method, "--no-progress",
            cwd=tmp_path)
        rows = json.loads((tmp_path / method / "metrics.json").read_text())
        assert [r["status"] for r in rows] == ["ok"] * 3
        mean_psnr[method] = np.mean([r["psnr"] for r in rows])
    assert mean_psnr["pnp-foe"] > mean_psnr["tv"] + 0.5, mean_psnr


def test_calibrate_from_files(tmp_path):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 24, 24, generator=g, dtype=torch.float64)
    x = torch.randn(24, generator=g, dtype=torch.float64)
    gains = 1 + 0.2 * torch.rand(24, generator=g, dtype=torch.float64)
    gains = gains / gains.mean()
    np.save(tmp_path / "y.npy", (gains * (A @ x)).numpy())
    np.save(tmp_path / "A.npy", A.numpy())
    cli("calibrate", "--measurements", tmp_path / "y.npy", "--matrices", tmp_path / "A.npy", "--method", "ls",
        "--out", tmp_path / "out", cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "gains.npy"), gains.numpy(), rtol=1e-8)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "image.npy"), x.numpy(), rtol=1e-7, atol=1e-8)


def test_info_says_when_the_compiled_extension_is_absent(tmp_path):
    out = cli("info", cwd=tmp_path, env={"IMAGING_NO_EXT": "1"}).stdout
    assert "not loaded" in out and "shipped models" in out and "ddpm_natural" in out


@pytest.mark.parametrize("command", ["reconstruct", "simulate", "denoise", "calibrate", "train", "bench", "info"])
def test_every_command_explains_its_options(command, tmp_path):
    text = cli(command, "--help", cwd=tmp_path).stdout
    assert "Usage: imaging" in text
    if command in ("reconstruct", "simulate"):
        assert "in pixels" in text and "--noise-level" in text


def test_each_command_has_its_docs_page_with_its_current_options():
    from imaging.cli import main, options_table

    for command in main.commands:
        page = (Path(__file__).resolve().parents[1] / "docs" / "cli" / f"{command}.md").read_text()
        assert options_table(command) in page, f"docs/cli/{command}.md is stale: run python scripts/cli_docs.py"


def test_train_a_shipped_recipe_on_your_images_then_export(clean, tmp_path):
    """Two steps of the LPN recipe on six 48² pictures (crops of 40²), a resumed third, then the export loads by
    path like the shipped one."""
    from imaging.priors import load_lpn

    images = tmp_path / "images"
    for k, path in enumerate(sorted(clean.glob("*.png"))):
        write_image(images / path.name, load_image(path.stem, size=48, channels=1)[0])
    cli("train", "lpn", "--data", images, "--run", tmp_path / "run", "--steps", "2", cwd=tmp_path)
    assert (tmp_path / "run" / "checkpoint.safetensors").exists()
    again = cli("train", "lpn", "--data", images, "--run", tmp_path / "run", "--steps", "3", cwd=tmp_path)
    assert "step 2 -> 3" in again.stderr
    cli("train", "lpn", "--run", tmp_path / "run", "--steps", "3", "--export", tmp_path / "lpn.safetensors",
        cwd=tmp_path)
    lpn = load_lpn(str(tmp_path / "lpn.safetensors"))
    assert lpn.prox(torch.rand(1, 1, 40, 40)).shape == (1, 1, 40, 40)


def test_bench_times_the_compiled_ops(tmp_path):
    out = cli("bench", "--size", "64", "--repeats", "1", cwd=tmp_path)
    assert "tv_prox" in out.stdout or "nothing to compare" in out.stderr


def test_batches_of_inputs(clean, tmp_path):
    """--batch-size 4: the inputs are solved in batches, and a corrupt input inside a batch is still named while
    the others finish."""
    cli("simulate", clean, "--operator", "blur", "--out", tmp_path / "y", cwd=tmp_path)
    (tmp_path / "y" / "broken.npy").write_text("not an array")
    common = ["reconstruct", tmp_path / "y", "--operator", "blur", "--method", "lsq", "--noise-level", "0.01",
              "--format", "npy", "--no-progress"]
    one = cli(*common, "--out", tmp_path / "one", cwd=tmp_path, check=False)
    four = cli(*common, "--batch-size", "4", "--out", tmp_path / "four", cwd=tmp_path, check=False)
    assert one.returncode == four.returncode == 1 and "broken.npy" in four.stderr
    rows = {r["input"]: r for r in json.loads((tmp_path / "four" / "metrics.json").read_text())}
    assert rows["broken.npy"]["status"] == "error" and sum(r["status"] == "ok" for r in rows.values()) == 6
    # each input keeps its own λ (the discrepancy principle per measurement): batching changes nothing
    single = {r["input"]: r for r in json.loads((tmp_path / "one" / "metrics.json").read_text())}
    for name, row in rows.items():
        if row["status"] == "ok":
            assert row["lam"] == pytest.approx(single[name]["lam"], rel=1e-9)
            assert np.allclose(np.load(tmp_path / "four" / name), np.load(tmp_path / "one" / name), atol=1e-6)


def test_train_offers_every_recipe():
    from imaging.cli import train
    from imaging.learning.recipes import SETTINGS

    choices = next(p for p in train.params if p.name == "prior").type.choices
    assert sorted(choices) == sorted(SETTINGS)
