"""The `imaging` command line: reconstruct, simulate, denoise, calibrate, train, bench and info.

The command maps names to the library's classes here, at its edge (the library itself takes objects). Inputs are
PNG / TIFF / NPY files or folders of them; outputs go to a folder, written atomically (an interruption leaves no
partial file), with a metrics file (JSON and CSV) listing every input and its status. An existing output is kept
and not recomputed (resume) unless `--overwrite`. Under `torchrun --nproc-per-node N` (or `accelerate launch`)
`reconstruct` and `denoise` shard the inputs over the processes (one GPU each where there are GPUs) and rank 0
gathers the metrics: the outputs are those of one process. Exit code 0 only when every input succeeded.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

OPERATORS = ("identity", "blur", "downsample", "inpaint", "cs", "mri", "ct")
METHODS = ("lsq", "tv", "pnp-lpn", "pnp-foe", "red-diff", "flair", "dps", "diffpir", "ddrm")
DENOISERS = ("tv", "ddpm", "lpn", "foe")
PNP_FOE_SIGMA = 0.03  # the noise level the field-of-experts denoiser assumes inside PnP-ADMM (chosen on train400)
OPERATOR_FILE = "imaging-operator.json"


# --- operators ------------------------------------------------------------------------------------------------------
def operator_options(command):
    """The options that choose and parametrise a forward operator (shared by simulate and reconstruct)."""
    options = [
        click.option("--operator", "operator_name", default=None,
                     help=f"forward operator: one of {', '.join(OPERATORS)}, or module:Class importable from your "
                          f"code (a LinearOperator; its keyword arguments with --operator-arg)"),
        click.option("--operator-arg", multiple=True, metavar="KEY=VALUE",
                     help="keyword argument of a module:Class operator (repeatable; values parsed as JSON)"),
        click.option("--operator-json", type=click.Path(exists=True, dir_okay=False),
                     help=f"the operator written by `imaging simulate` ({OPERATOR_FILE} in its output folder)"),
        click.option("--blur-sigma", type=float, default=1.6, show_default=True,
                     help="blur: standard deviation of the Gaussian kernel, in pixels"),
        click.option("--kernel", type=click.Path(exists=True, dir_okay=False),
                     help="blur: a kernel image file (PNG/TIFF/NPY) instead of the Gaussian; normalised to sum 1"),
        click.option("--blur-mode", type=click.Choice(["reflect", "circular", "zeros", "replicate"]),
                     default="reflect", show_default=True, help="blur: boundary handling"),
        click.option("--factor", type=int, default=4, show_default=True,
                     help="downsample: the factor (box filter: averages of factor x factor pixels)"),
        click.option("--mask", "mask_file", type=click.Path(exists=True, dir_okay=False),
                     help="inpaint / mri: a mask image (non-zero = observed pixel or k-space sample)"),
        click.option("--missing", type=float, default=0.5, show_default=True,
                     help="inpaint: fraction of missing pixels of a random mask (without --mask)"),
        click.option("--ratio", type=float, default=0.3, show_default=True,
                     help="cs: measurements per pixel (structured random DCT sensing)"),
        click.option("--acceleration", type=int, default=4, show_default=True,
                     help="mri: Cartesian under-sampling factor of a random line mask (without --mask)"),
        click.option("--angles", type=int, default=60, show_default=True,
                     help="ct: number of parallel-beam projection angles over 180 degrees"),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="seed of random masks / sensing, and of the noise in simulate"),
        click.option("--image-size", type=int, nargs=2, metavar="H W",
                     help="image height and width when the measurements do not tell (cs, ct)"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def operator_settings(options: dict) -> dict:
    """The operator's settings from the command's options (or from --operator-json)."""
    if options.get("operator_json"):
        settings = json.loads(Path(options["operator_json"]).read_text())
        return {**settings, "operator_json": None}
    keys = ("operator_name", "operator_arg", "blur_sigma", "kernel", "blur_mode", "factor", "mask_file", "missing",
            "ratio", "acceleration", "angles", "seed", "image_size")
    settings = {key: options.get(key) for key in keys}
    settings["operator_arg"] = list(settings["operator_arg"] or ())
    for key in ("kernel", "mask_file"):
        if settings[key]:
            settings[key] = str(Path(settings[key]).resolve())
    if settings["operator_name"] is None:
        raise click.UsageError("give --operator (or --operator-json from `imaging simulate`)")
    return settings


def _read_array(path: str) -> torch.Tensor:
    from imaging.data import read_image

    return read_image(path, channels=1, dtype=torch.float64)[0]


def build_operator(settings: dict, image_shape: tuple[int, int, int]):
    """The LinearOperator named by `settings` for images of shape (C, H, W)."""
    from imaging import operators as ops

    name, (c, h, w) = settings["operator_name"], image_shape
    seed = settings["seed"]
    if name == "identity":
        return ops.Identity()
    if name == "blur":
        kernel = _read_array(settings["kernel"]) if settings["kernel"] else ops.gaussian_kernel(settings["blur_sigma"])
        return ops.Blur(kernel / kernel.sum(), mode=settings["blur_mode"])
    if name == "downsample":
        return ops.Downsampling(settings["factor"], filter="box")
    if name == "inpaint":
        if settings["mask_file"]:
            return ops.Inpainting((_read_array(settings["mask_file"]) != 0).double())
        return ops.Inpainting.random((1, 1, h, w), settings["missing"], seed=seed)
    if name == "cs":
        return ops.StructuredCompressedSensing(max(1, round(settings["ratio"] * c * h * w)), (c, h, w), seed=seed)
    if name == "mri":
        mask = (_read_array(settings["mask_file"]) != 0).double() if settings["mask_file"] else \
            ops.cartesian_mask((h, w), settings["acceleration"], seed=seed)
        return ops.MRI(mask)
    if name == "ct":
        return ops.Radon((h, w), settings["angles"])
    if ":" in name:
        import importlib

        module, _, cls = name.partition(":")
        sys.path.insert(0, os.getcwd())
        try:
            factory = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as error:
            raise click.UsageError(f"--operator {name!r}: cannot import {cls} from {module}: {error}") from None
        kwargs = {}
        for item in settings["operator_arg"]:
            key, _, value = item.partition("=")
            try:
                kwargs[key] = json.loads(value)
            except json.JSONDecodeError:
                kwargs[key] = value
        return factory(**kwargs)
    raise click.UsageError(f"--operator must be one of {', '.join(OPERATORS)} or module:Class, got {name!r}")


def image_shape_for(settings: dict, y: torch.Tensor) -> tuple[int, int, int]:
    """(C, H, W) of the unknown image, from the measurement of one input (without its batch dimension)."""
    name, size = settings["operator_name"], settings.get("image_size")
    if size:
        return (1, *size)
    if name in ("identity", "blur", "inpaint", "mri") or (":" in name and y.dim() >= 2):
        return (1, *y.shape[-2:])
    if name == "downsample":
        return (1, y.shape[-2] * settings["factor"], y.shape[-1] * settings["factor"])
    raise click.UsageError(f"--operator {name}: give --image-size H W (the measurements do not tell the image size)")


# --- files ----------------------------------------------------------------------------------------------------------
def input_files(paths: tuple[str, ...]) -> list[Path]:
    from imaging.data import IMAGE_SUFFIXES

    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            files.append(path)
        else:
            raise click.UsageError(f"input {str(path)!r} does not exist")
    if not files:
        raise click.UsageError(f"no input files (PNG/TIFF/NPY) in {', '.join(paths)}")
    return files


def read_measurement(path: Path) -> torch.Tensor:
    """A measurement file as a tensor: NPY as stored (any shape, complex allowed), images as (C, H, W) in [0, 1]."""
    from imaging.data import read_image

    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise ValueError(f"{path.name}: not a readable NPY array ({error})") from None
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{path.name}: contains NaN or infinite values")
        return torch.from_numpy(np.ascontiguousarray(array))
    return read_image(str(path), channels=1, dtype=torch.float64)


def as_batch(y: torch.Tensor, settings: dict) -> torch.Tensor:
    """One measurement as a batch of one in the operator's layout: images (1, C, H, W), CS (1, m)."""
    if settings["operator_name"] == "cs":
        return y.reshape(1, -1)
    if y.dim() == 2:
        return y[None, None]
    return y[None]


def write_table(folder: Path, rows: list[dict]) -> None:
    """metrics.json and metrics.csv, atomically."""
    from imaging.data import save_text_atomically

    save_text_atomically(folder / "metrics.json", json.dumps(rows, indent=1))
    columns = sorted({key for row in rows for key in row}, key=lambda k: (k != "input", k != "status", k))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    writer.writerows(rows)
    save_text_atomically(folder / "metrics.csv", buffer.getvalue())


# --- distribution ---------------------------------------------------------------------------------------------------
class Processes:
    """This process's rank among the processes started by torchrun / accelerate launch (WORLD_SIZE > 1), one GPU
    each where there are GPUs; a single process otherwise."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        if self.world > 1:
            import torch.distributed as dist

            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if not dist.is_initialized():
                dist.init_process_group(backend)
            self.rank = dist.get_rank()
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))

    def shard(self, items: list) -> list:
        return items[self.rank::self.world]

    def gather(self, rows: list[dict]) -> list[dict]:
        """Every process's rows, on every process."""
        if self.world == 1:
            return rows
        import torch.distributed as dist

        everything = [None] * self.world
        dist.all_gather_object(everything, rows)
        return [row for part in everything for row in part]

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def device_for(choice: str) -> torch.device:
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    return torch.device(choice)


# --- methods --------------------------------------------------------------------------------------------------------
def solve(method: str, A, y: torch.Tensor, sigma: float, steps: int | None, seed: int):
    """x, λ chosen (or None), converged: the named method with its defaults from the noise level σ."""
    import imaging
    from imaging.operators import FiniteDifference

    if method == "lsq":
        r = imaging.least_squares(A, y, lam="auto", noise_level=sigma, regulariser=FiniteDifference())
    elif method == "tv":
        r = imaging.tv_reconstruct(A, y, "auto", noise_level=sigma, box=(0.0, 1.0))
    elif method == "pnp-lpn":
        from imaging.priors import pretrained_lpn
        from imaging.solvers import PnPADMM

        lpn = pretrained_lpn("natural", dtype=y.real.dtype).to(y.device)
        r = PnPADMM(A, y, lpn.prox, rho="auto", noise_level=sigma, box=(0.0, 1.0)).run()
    elif method == "pnp-foe":
        from imaging.priors import UnrolledFoE
        from imaging.solvers import PnPADMM

        foe = UnrolledFoE.pretrained("natural-sigma25-student", dtype=y.real.dtype).to(y.device)
        # the denoiser's level: chosen once on train400 crops (benchmarks/inverse_natural.py --tune)
        r = PnPADMM(A, y, lambda v: foe(v, PNP_FOE_SIGMA), rho="auto", noise_level=sigma, box=(0.0, 1.0)).run()
    else:
        from imaging.priors import DiffusionPrior, FlowPrior
        from imaging.solvers import DDRM, DPS, DiffPIR, Flair, RedDiff

        prior = DiffusionPrior.pretrained("natural", dtype=torch.float32, device=y.device)
        extra = {"steps": steps} if steps else {}
        seed = [seed] * y.shape[0]  # one per input: each draws what it would alone, whatever the batching
        if method == "red-diff":
            r = RedDiff(A, y, prior, noise_level=sigma, seed=seed, **extra).run()
        elif method == "flair":
            r = Flair(A, y, FlowPrior.from_diffusion(prior), noise_level=sigma, seed=seed, **extra).run()
        elif method == "dps":
            r = DPS(A, y, prior, noise_level=sigma, seed=seed, **extra).run()
        elif method == "diffpir":
            r = DiffPIR(A, y, prior, noise_level=sigma, seed=seed, **extra).run()
        elif method == "ddrm":
            r = DDRM(A, y, prior, noise_level=sigma, seed=seed, **extra).run()
        else:
            raise click.UsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    return r.x, r.lam, bool(r.converged) if not isinstance(r.converged, torch.Tensor) else bool(r.converged.all())


def denoise_one(method: str, y: torch.Tensor, sigma: float):
    import imaging

    if method == "tv":
        r = imaging.tv_reconstruct(imaging.operators.Identity(), y, "auto", noise_level=sigma, box=(0.0, 1.0))
        return r.x, r.lam, bool(r.converged)
    if method == "lpn":
        from imaging.priors import pretrained_lpn

        return pretrained_lpn("natural", dtype=y.dtype).to(y.device).prox(y).detach(), None, True
    if method == "ddpm":
        from imaging.priors import DiffusionPrior

        prior = DiffusionPrior.pretrained("natural", device=y.device)
        return prior.denoise(y.float(), sigma).to(y.dtype), None, True
    if method == "foe":
        from imaging.priors import UnrolledFoE

        model = UnrolledFoE.pretrained("natural-sigma25-student", dtype=y.dtype).to(y.device)
        with torch.no_grad():
            return model(y, sigma).clamp(0.0, 1.0), None, True
    raise click.UsageError(f"--method must be one of {', '.join(DENOISERS)}, got {method!r}")


# --- the shared driver ------------------------------------------------------------------------------------------------
def run_inputs(files: list[Path], out: Path, suffix: str, overwrite: bool, truth: str | None, load, compute,
               batch_size: int, progress: bool) -> int:
    """For each input of this process's shard: keep its output when it exists (unless overwrite), else
    `load(path) -> item` (a dict with the measurement batch "y" and a grouping "key"), then `compute(items) ->
    [(x, extra metrics)]` on up to `batch_size` items of the same key at once, and write each x. A failing input
    is reported and skipped (a failing batch is retried input by input). Rank 0 writes the metrics of all inputs.
    Returns the exit code (0: every input succeeded)."""
    from tqdm.auto import tqdm

    from imaging.data import read_image, write_image

    if batch_size < 1:
        raise click.BadParameter(f"expected an integer >= 1, got {batch_size}", param_hint="--batch-size")
    processes = Processes()
    rows = []

    def fail(row: dict, error: Exception, name: str) -> None:
        row.update(status="error", error=f"{type(error).__name__}: {error}")
        click.echo(f"imaging: {name}: {row['error']}", err=True)

    def finish(path: Path, row: dict, x: torch.Tensor, seconds: float) -> None:
        if truth:
            try:
                row.update(quality(x, path, Path(truth)))
            except (OSError, ValueError, RuntimeError) as error:
                row["truth_error"] = f"{type(error).__name__}: {error}"
        row["seconds"] = round(seconds, 3)

    try:
        mine = processes.shard(files)
        bar = tqdm(total=len(mine), desc=f"rank {processes.rank}" if processes.world > 1 else "imaging",
                   disable=not progress)
        for first in range(0, len(mine), batch_size):
            pending = []
            for path in mine[first:first + batch_size]:
                target, start = out / (path.stem + suffix), time.perf_counter()
                row = {"input": path.name, "output": target.name}
                rows.append(row)
                try:
                    if target.exists() and not overwrite:  # resume: keep it, report it
                        x = torch.from_numpy(np.load(target)) if suffix == ".npy" else \
                            read_image(str(target), channels=None, dtype=torch.float64)
                        row["status"] = "skipped (exists)"
                        finish(path, row, x, time.perf_counter() - start)
                    else:
                        pending.append((path, row, load(path), start))
                except click.UsageError:
                    raise
                except Exception as error:  # noqa: BLE001  (reported per input; the others go on)
                    fail(row, error, path.name)
            groups: dict = {}
            for entry in pending:
                groups.setdefault(entry[2]["key"], []).append(entry)
            for group in groups.values():
                start = time.perf_counter()
                try:
                    results = compute([entry[2] for entry in group])
                except click.UsageError:
                    raise
                except Exception as error:  # noqa: BLE001
                    if len(group) == 1:
                        fail(group[0][1], error, group[0][0].name)
                        continue
                    results = None
                if results is None:  # retry one by one, so that the failing input is named
                    singles = []
                    for path, row, item, _ in group:
                        try:
                            singles.append(compute([item])[0])
                        except Exception as error:  # noqa: BLE001
                            fail(row, error, path.name)
                            singles.append(None)
                    results = singles
                seconds = (time.perf_counter() - start) / len(group)
                for (path, row, _, _), result in zip(group, results):
                    if result is None:
                        continue
                    x, extra = result
                    try:
                        write_image(out / (path.stem + suffix), x, overwrite=overwrite)
                        row.update(extra, status="ok")
                        finish(path, row, x, seconds)
                    except Exception as error:  # noqa: BLE001
                        fail(row, error, path.name)
            bar.update(len(mine[first:first + batch_size]))
        bar.close()
        everything = sorted(processes.gather(rows), key=lambda r: r["input"])
        if processes.rank == 0:
            write_table(out, everything)
            failed = [r["input"] for r in everything if r["status"] == "error"]
            click.echo(f"imaging: {len(everything) - len(failed)} of {len(everything)} inputs done, outputs and "
                       f"metrics in {out}" + (f"; failed: {', '.join(failed)}" if failed else ""), err=True)
        return 1 if any(r["status"] == "error" for r in everything) else 0
    finally:
        processes.close()


def quality(x: torch.Tensor, path: Path, truth: Path) -> dict:
    """PSNR and SSIM of x against the ground truth of the same name."""
    from imaging.data import read_image
    from imaging.metrics import psnr, ssim

    clean = read_image(str(_truth_file(truth, path.stem)), channels=1, dtype=torch.float64)
    estimate = x.real.double().reshape(clean.shape).clamp(0, 1)
    return {"psnr": float(psnr(estimate[None], clean[None])), "ssim": float(ssim(estimate[None], clean[None]))}


def _truth_file(folder: Path, stem: str) -> Path:
    from imaging.data import IMAGE_SUFFIXES

    for suffix in IMAGE_SUFFIXES:
        if (folder / (stem + suffix)).exists():
            return folder / (stem + suffix)
    raise FileNotFoundError(f"no ground truth {stem}.* in {folder}")


def noise_level_of(value: str, y: torch.Tensor, A) -> float:
    import imaging

    if value == "auto":
        return float(imaging.estimate_noise(y, A))
    try:
        sigma = float(value)
    except ValueError:
        raise click.BadParameter(f"expected a number >= 0 or 'auto', got {value!r}", param_hint="--noise-level")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise click.BadParameter(f"expected a number >= 0 or 'auto', got {value!r}", param_hint="--noise-level")
    return sigma


def options_table(name: str) -> str:
    """The Markdown table of a command's arguments and options, from their help (docs/cli/<name>.md holds it)."""
    command = main.commands[name]
    rows = ["| option | meaning |", "|---|---|"]
    for param in command.params:
        if isinstance(param, click.Option):
            flags = ", ".join(f"`{o}`" for o in param.opts + param.secondary_opts)
            default = param.default if param.show_default and param.default not in (None, ()) else None
            text = (param.help or "").replace("|", "\\|") + (f" (default: {default})" if default is not None else "")
            rows.append(f"| {flags} | {text} |")
        elif isinstance(param.type, click.Choice):
            rows.append(f"| `{param.name.upper()}` | one of {', '.join(param.type.choices)} |")
        else:
            rows.append(f"| `{param.name.upper()}` | files or folders of PNG / TIFF / NPY |")
    return "\n".join(rows) + "\n"


# --- commands -------------------------------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="imaging")
def main() -> None:
    """imaging: reconstruct images from measurements (blur, inpainting, super-resolution, compressed sensing, MRI,
    CT or your own operator) with classical and learned priors."""


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--method", type=click.Choice(METHODS), default="tv", show_default=True,
              help="lsq: least squares with a gradient penalty; tv: total variation; pnp-lpn / pnp-foe: plug-and-play "
                   "ADMM with the shipped learned proximal network / Student-t field of experts; red-diff, flair, "
                   "dps, diffpir, ddrm: the shipped natural-image diffusion prior")
@click.option("--noise-level", default="auto", show_default=True,
              help="standard deviation of the noise per measurement entry (image units, [0, 1] scale), or 'auto' "
                   "to estimate it from each measurement; the regularisation is chosen from it")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--format", "fmt", type=click.Choice(["png", "tiff", "npy"]), default="png", show_default=True,
              help="output files: 8-bit PNG (clipped to [0, 1]), float32 TIFF, or NPY")
@click.option("--truth", type=click.Path(exists=True, file_okay=False),
              help="folder of ground-truth images with the inputs' names: PSNR and SSIM in the metrics")
@click.option("--steps", type=int, default=None, help="steps of the diffusion methods (default: each method's own)")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float64", show_default=True,
              help="floating-point precision of the solve")
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="measurements of the same shape and noise level solved together (faster on a GPU); λ is still "
                   "chosen and noise drawn per input, so the outputs do not depend on the batching")
@click.option("--overwrite", is_flag=True, help="recompute and replace existing outputs (default: keep them)")
@click.option("--progress/--no-progress", default=True, show_default=True, help="a progress bar")
@operator_options
def reconstruct(inputs, method, noise_level, out, fmt, truth, steps, device, dtype, batch_size, overwrite, progress,
                **options):
    """Reconstruct an image from each measurement file in INPUTS (files or folders of PNG/TIFF/NPY).

    Example: imaging reconstruct measurements/ --operator blur --blur-sigma 2 --method tv --out results/"""
    settings = operator_settings(options)
    files = input_files(inputs)
    dev, real = device_for(device), getattr(torch, dtype)
    complex_type = torch.complex128 if real == torch.float64 else torch.complex64

    def load(path: Path) -> dict:
        y = read_measurement(path)
        A = build_operator(settings, image_shape_for(settings, y))
        y = as_batch(y, settings).to(device=dev, dtype=complex_type if y.is_complex() else real)
        A = A.to(dev) if isinstance(A, torch.nn.Module) else A
        sigma = noise_level_of(noise_level, y, A)
        return {"y": y, "A": A, "sigma": sigma, "key": (tuple(y.shape), y.dtype, sigma)}

    def compute(items: list[dict]) -> list:
        x, lam, converged = solve(method, items[0]["A"], torch.cat([item["y"] for item in items]),
                                  items[0]["sigma"], steps, settings["seed"])
        return [(x[i].real.cpu(), {"noise_level": items[0]["sigma"], "lam": lam if not isinstance(lam, torch.Tensor)
                                   else float(lam.reshape(-1)[min(i, lam.numel() - 1)]),
                                   "converged": converged, "method": method}) for i in range(len(items))]

    sys.exit(run_inputs(files, Path(out), "." + fmt, overwrite, truth, load, compute, batch_size, progress))


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--method", type=click.Choice(DENOISERS), default="tv", show_default=True,
              help="tv: total variation with λ from the noise level; ddpm: the shipped diffusion model's one-step "
                   "denoiser; lpn: the shipped learned proximal network (trained for σ about 0.08-0.12); foe: the "
                   "shipped Student-t field of experts (10 learned gradient steps, trained at σ = 25/255; at other σ "
                   "it denoises the image scaled by 25/255/σ)")
@click.option("--noise-level", default="auto", show_default=True,
              help="noise standard deviation on the [0, 1] scale, or 'auto' to estimate it from each image")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--format", "fmt", type=click.Choice(["png", "tiff", "npy"]), default="png", show_default=True)
@click.option("--truth", type=click.Path(exists=True, file_okay=False), help="ground-truth folder (PSNR, SSIM)")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto")
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="images of the same shape and noise level denoised together")
@click.option("--overwrite", is_flag=True, help="recompute and replace existing outputs")
@click.option("--progress/--no-progress", default=True, show_default=True)
def denoise(inputs, method, noise_level, out, fmt, truth, device, batch_size, overwrite, progress):
    """Denoise each grey image in INPUTS (files or folders). Example: imaging denoise noisy/ --method ddpm
    --noise-level 0.1 --out clean/"""
    import imaging

    files, dev = input_files(inputs), device_for(device)

    def load(path: Path) -> dict:
        y = read_measurement(path)
        y = (y if y.dim() == 3 else y[None])[None].to(device=dev, dtype=torch.float64)
        sigma = noise_level_of(noise_level, y, imaging.operators.Identity())
        return {"y": y, "sigma": sigma, "key": (tuple(y.shape), sigma)}

    def compute(items: list[dict]) -> list:
        x, lam, converged = denoise_one(method, torch.cat([item["y"] for item in items]), items[0]["sigma"])
        return [(x[i].cpu(), {"noise_level": items[0]["sigma"], "converged": converged, "method": method})
                for i in range(len(items))]

    sys.exit(run_inputs(files, Path(out), "." + fmt, overwrite, truth, load, compute, batch_size, progress))


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--noise-level", type=float, default=0.01, show_default=True,
              help="standard deviation of the Gaussian noise added per measurement entry ([0, 1] image scale)")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help=f"output folder: one NPY measurement per image and {OPERATOR_FILE}")
@click.option("--overwrite", is_flag=True, help="replace existing measurements")
@operator_options
def simulate(inputs, noise_level, out, overwrite, **options):
    """Make measurements y = A x + noise from clean grey images (to try the reconstructions). Example:
    imaging simulate clean/ --operator inpaint --missing 0.5 --noise-level 0.01 --out measurements/"""
    from imaging.data import read_image, save_text_atomically, write_image
    from imaging.operators import GaussianNoise

    settings = operator_settings(options)
    files, out = input_files(inputs), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_text_atomically(out / OPERATOR_FILE, json.dumps(settings, indent=1))
    failed = []
    for index, path in enumerate(files):
        target = out / (path.stem + ".npy")
        try:
            if target.exists() and not overwrite:
                continue
            x = read_image(str(path), channels=1, dtype=torch.float64)[None]
            A = build_operator(settings, tuple(x.shape[1:]))
            generator = torch.Generator().manual_seed(settings["seed"] * 100003 + index)
            y = GaussianNoise(noise_level)(A(x), generator=generator)
            write_image(target, y[0], overwrite=overwrite)
        except (OSError, ValueError, RuntimeError) as error:
            failed.append(path.name)
            click.echo(f"imaging: {path.name}: {type(error).__name__}: {error}", err=True)
    click.echo(f"imaging: {len(files) - len(failed)} of {len(files)} measurements in {out}", err=True)
    sys.exit(1 if failed else 0)


@main.command()
@click.option("--measurements", "y_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="NPY of shape (p, m): p snapshots of m sensors (or (B, p, m))")
@click.option("--matrices", "a_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="NPY of shape (p, m, n): the known sensing matrices (or (B, p, m, n))")
@click.option("--method", type=click.Choice(["pgd", "ls", "spectral", "alternating", "uncalibrated"]), default="pgd",
              show_default=True, help="calibration method (see docs/calibration.md)")
@click.option("--max-iter", type=int, default=500, show_default=True, help="iterations of pgd / alternating")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="output folder: image.npy (n,), gains.npy (m,) with mean 1, metrics.json")
def calibrate(y_file, a_file, method, max_iter, out):
    """Blind gain calibration of a sensor array: recover the image and the sensors' gains from y_l = diag(d) A_l x."""
    from imaging import calibration
    from imaging.data import save_text_atomically, write_image

    y = torch.from_numpy(np.load(y_file, allow_pickle=False))
    A = torch.from_numpy(np.load(a_file, allow_pickle=False))
    single = y.dim() == 2
    solvers = {"pgd": calibration.pgd, "ls": calibration.least_squares, "spectral": calibration.spectral,
               "alternating": calibration.alternating, "uncalibrated": calibration.uncalibrated}
    options = {"max_iter": max_iter} if method in ("pgd", "alternating") else {}
    result = solvers[method](calibration.DenseGainSensing(A), y[None] if single else y, **options)
    out = Path(out)
    write_image(out / "image.npy", result.x[0] if single else result.x, overwrite=True)
    write_image(out / "gains.npy", result.gains[0] if single else result.gains, overwrite=True)
    converged = result.converged.tolist()
    save_text_atomically(out / "metrics.json", json.dumps(
        {"method": method, "iterations": result.iterations, "converged": converged,
         "loss": float(result.history["loss"][-1].max())}, indent=1))
    click.echo(f"imaging: calibrated ({method}, {result.iterations} iterations, converged {converged}) -> {out}",
               err=True)


@main.command()
@click.argument("prior", type=click.Choice(["ddpm", "lpn", "lpn-wide", "foe"]))
@click.option("--data", type=click.Path(exists=True, file_okay=False),
              help="folder of training images (PNG/TIFF/NPY), e.g. train400; random crops are drawn from it")
@click.option("--run", "run", type=click.Path(file_okay=False), default=None,
              help="run folder: checkpoint and log; training again continues it (default: runs/<prior>)")
@click.option("--hours", type=float, default=None, help="stop this chunk after so many hours (resume later)")
@click.option("--steps", type=int, default=None, help="override the recipe's number of optimiser steps")
@click.option("--init", type=click.Path(exists=True),
              help="start a new run from exported weights (e.g. the shipped imaging/weights/ddpm_natural)")
@click.option("--export", "export_to", type=click.Path(), default=None,
              help="write the run's EMA weights to this folder/file (the layout the library loads) and exit")
def train(prior, data, run, hours, steps, init, export_to):
    """Train a shipped prior's recipe (imaging.learning.recipes) on your images: ddpm (DiffusionPrior), lpn
    (learned proximal network), lpn-wide (the shipped natural LPN grown to 128 channels, continued) or foe (the
    Student-t field of experts, UnrolledFoE). Under `accelerate launch` / `torchrun` it trains on several GPUs or
    nodes.

    Example: imaging train lpn --data my_ct_slices/ --run runs/lpn --hours 2"""
    from imaging.learning.recipes import SETTINGS, export_prior, train_prior

    run = Path(run or f"runs/{prior}")
    if export_to:
        step = export_prior(prior, run, export_to, data, steps=steps)
        click.echo(f"imaging: exported step {step} of {run} to {export_to}", err=True)
        return
    if data is None:
        raise click.UsageError("--data is required to train")
    result = train_prior(prior, data, run, hours=hours, init=init, steps=steps)
    total = steps or SETTINGS[prior]["steps"]
    click.echo(f"imaging: {prior} step {result.resumed_from} -> {result.steps} of {total} in {result.seconds:.0f} s, "
               f"loss {result.loss:.4g}; run folder {run}", err=True)


@main.command()
@click.option("--size", type=int, default=512, show_default=True, help="image side in pixels")
@click.option("--repeats", type=int, default=3, show_default=True, help="timings per op (the best is kept)")
def bench(size, repeats):
    """Time the compiled ops against their pure-torch references on this machine (the peers' side-by-side
    benchmarks are `make bench` in a clone)."""
    import importlib

    from imaging import _ext

    fd, foe, tv = (importlib.import_module(f"imaging.ops.{name}") for name in ("finite_diff", "foe", "tv"))

    if not _ext.HAS_EXT:
        click.echo(f"imaging bench: {_ext.describe()}: nothing to compare", err=True)
        return
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, size, size, generator=g)
    filters = torch.randn(8, 5, 5, generator=g)
    weights, nu = torch.ones(8), torch.full((8,), 0.1)
    lam = torch.full((1, 1), 0.1)
    cases = {
        "finite_diff": (lambda: fd.finite_diff(x), lambda: fd._finite_diff_torch(x)),
        "tv_grad": (lambda: tv.tv_grad(x, 1e-3), lambda: tv._tv_grad_torch(x, 1e-3)),
        "tv_prox (50 iterations)": (lambda: tv.tv_prox(x, 0.1, tol=0, max_iter=50),
                                    lambda: tv._tv_prox_torch(x, lam, True, 0.0, 50)),
        "foe_grad (8 filters 5x5)": (lambda: foe.foe_grad(x, filters, weights, nu),
                                     lambda: foe._foe_grad_torch(x, filters, weights, nu))}

    def best(fn):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    click.echo(f"{size}x{size} float32, {torch.get_num_threads()} threads: compiled vs pure-torch reference")
    for name, (compiled, reference) in cases.items():
        a, b = best(compiled), best(reference)
        click.echo(f"  {name:26s} {a * 1e3:9.2f} ms  {b * 1e3:9.2f} ms  ({b / a:5.1f}x)")


@main.command()
def info():
    """Version, compiled ops and devices available, shipped models and optional extras."""
    import importlib.util

    import imaging
    from imaging import _ext

    click.echo(f"imaging {imaging.__version__}, torch {torch.__version__}, Python {sys.version.split()[0]}")
    click.echo(f"compiled ops: {_ext.describe()}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    click.echo(f"devices: cpu ({torch.get_num_threads()} threads)" + (
        "".join(f", cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(gpus)) if gpus else ", no CUDA device"))
    weights = Path(imaging.__file__).parent / "weights"
    models = sorted(p.name for p in weights.iterdir() if p.name != "README.md") if weights.is_dir() else []
    click.echo(f"shipped models ({weights}): {', '.join(models) if models else 'none'}")
    extras = {"diffusers": "generative", "accelerate": "generative", "matplotlib": "plots", "mkdocs": "docs",
              "bm3d": "all"}
    click.echo("optional packages: " + ", ".join(
        f"{name} ({'yes' if importlib.util.find_spec(name) else 'no: pip install imaging[' + extra + ']'})"
        for name, extra in extras.items()))


if __name__ == "__main__":
    main()
