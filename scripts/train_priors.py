"""Train the shipped natural-image priors on a folder of images (train400): the recipes of
`imaging.learning.recipes` (settings in its SETTINGS), with `imaging.learning.Trainer`.

    python scripts/train_priors.py ddpm --data ../shared/datasets/train400 [--hours 1.9] [--threads 1]
    python scripts/train_priors.py ddpm --export imaging/weights/ddpm_natural       # EMA weights -> shipped diffusers folder
    python scripts/train_priors.py lpn --data ../shared/datasets/train400
    python scripts/train_priors.py lpn --export imaging/weights/lpn_natural.safetensors
    accelerate launch scripts/train_priors.py ddpm --data ...            # several GPUs / nodes, same script

The same as `imaging train` (the command line). A run lives in `runs/<prior>/` (checkpoint.safetensors,
log.jsonl); calling the script again continues it where it stopped, so a long training runs in chunks (`--hours`)
across sessions. `--export` writes the EMA weights where the library loads them by name, with `training.json`
(settings, steps, wall time, loss curve). `--curves` plots the loss curve.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from imaging.learning.recipes import SETTINGS, export_prior, train_prior
from imaging.learning.trainer import LOG


def plot_curve(prior: str, run: Path, figure_path: str) -> None:
    """The training loss (log.jsonl) against steps; the title gives the steps and the training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from imaging.plotting import save_figure

    log = [json.loads(line) for line in (run / LOG).read_text().splitlines() if line.strip()]
    steps, losses = [e["step"] for e in log], [e["loss"] for e in log]
    figure, axis = plt.subplots(figsize=(6, 3.2), layout="constrained")
    axis.plot(steps, losses, lw=0.8)
    axis.set_xlabel("step")
    axis.set_ylabel("training loss (mean of each logged window)")
    axis.set_yscale("log")
    axis.set_title(f"{prior}: {steps[-1]} steps, {log[-1]['seconds'] / 3600:.2f} h on the CPU")
    print(f"-> {save_figure(figure, figure_path)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior", choices=sorted(SETTINGS))
    parser.add_argument("--data", help="folder of training images (PNG/TIFF/NPY), e.g. ../shared/datasets/train400")
    parser.add_argument("--run", help="run folder (default runs/<prior>)")
    parser.add_argument("--hours", type=float, default=None, help="stop this chunk after so many hours")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--export", metavar="FOLDER", help="write the EMA weights of the run to FOLDER and exit")
    parser.add_argument("--curves", metavar="FIGURE", help="plot the loss curve of the run (log.jsonl) and exit")
    parser.add_argument("--init", metavar="EXPORTED",
                        help="a run folder without a checkpoint starts from these exported weights and their step "
                             "(e.g. imaging/weights/ddpm_natural, imaging/weights/lpn_natural.safetensors): how a run "
                             "continues in a fresh checkout; AdamW's moments restart")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run or f"runs/{args.prior}")
    if args.curves:
        plot_curve(args.prior, run, args.curves)
        return
    if args.export is not None:
        step = export_prior(args.prior, run, args.export, args.data)
        print(f"exported step {step} of {run} to {args.export}")
        return
    if args.data is None:
        parser.error("--data is required to train")
    result = train_prior(args.prior, args.data, run, hours=args.hours, init=args.init)
    print(f"{args.prior}: step {result.resumed_from} -> {result.steps} of {SETTINGS[args.prior]['steps']} in "
          f"{result.seconds:.0f} s; loss {result.loss:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
