"""Benchmark: the cost of RED-Diff and FLAIR outside network evaluation (target of the issue: ≤ 10 % of a step).

For each solver, one run of K steps with the shipped face priors (imaging/weights/ddpm_faces32, imaging/weights/flow_faces32) against the
same run with zero-cost networks in their place (an ε / velocity model returning zeros, an identity autoencoder of
the latent shape): the second run's time is what the solver itself costs (operator, autograd of the data term,
optimiser, noise, bookkeeping), reported as a fraction of the first. FLAIR takes exactly its J data steps per prior
step here, with the paper's fixed data step (lr_data 1, noise_level 0, min_decrease 0: no early stop, no step
search), so both runs do the same work; the data steps go through the decoder (forward and backward): network
time. Tasks: 4× super-resolution on 32² faces, batch 1 and 16. Also peak extra memory.
Run: `python benchmarks/generative.py [--device cuda] [--steps 50] [--repeats 2]`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from _timing import PeakMemory, best_time
from imaging.data import load_faces
from imaging.operators import Downsampling
from imaging.priors import DiffusionPrior, FlowPrior
from imaging.solvers import Flair, RedDiff

DATA = Path(__file__).resolve().parents[1] / "imaging" / "weights"


def zero_network(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


class LatentIdentity(nn.Module):
    """A free 'autoencoder' with the real one's latent shape: pixel unshuffle / shuffle by the downsampling factor,
    channels padded to the latent's."""

    def __init__(self, factor: int, channels: int) -> None:
        super().__init__()
        self.factor, self.channels = factor, channels

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.nn.functional.pixel_unshuffle(x, self.factor)
        return z[:, : self.channels]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        pad = self.factor ** 2 - z.shape[1]
        z = torch.cat([z, z.new_zeros(z.shape[0], pad, *z.shape[2:])], 1) if pad > 0 else z
        return torch.nn.functional.pixel_shuffle(z, self.factor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = args.device
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    ddpm = DiffusionPrior.from_pretrained(DATA / "ddpm_faces32", device=device)
    flow = FlowPrior.from_pretrained(DATA / "flow_faces32", device=device)
    c, h, _ = flow.latent_shape
    free_ddpm = DiffusionPrior(zero_network, ddpm.alphas_cumprod, image_shape=ddpm.image_shape)
    free_flow = FlowPrior(zero_network, LatentIdentity(32 // h, c), latent_shape=flow.latent_shape)
    free_flow.calibrated_weights = flow.calibrated_weights
    op = Downsampling(4, "box").to(device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; 4x SR of 32² faces, "
          f"{args.steps} steps")
    print(f"{'solver':<9} {'batch':>5} {'step ms':>8} {'free-network step ms':>21} {'overhead':>9} {'peak MB':>8}")
    for batch in (1, 16):
        truth = load_faces("test").repeat(2, 1, 1, 1)[:batch].to(device)
        y = op(truth)
        for name, real, free in (
                ("RED-Diff", lambda p: RedDiff(op, y, p, steps=args.steps).run(), ddpm),
                ("FLAIR", lambda p: Flair(op, y, p, steps=args.steps, noise_level=0.0, lr_data=1.0,
                                           min_decrease=0.0).run(), flow)):
            free_prior = free_ddpm if name == "RED-Diff" else free_flow
            with PeakMemory(device) as memory:
                seconds = best_time(lambda: real(free), args.repeats, sync)
            free_seconds = best_time(lambda: real(free_prior), args.repeats, sync)
            print(f"{name:<9} {batch:>5} {1e3 * seconds / args.steps:8.2f} {1e3 * free_seconds / args.steps:21.2f} "
                  f"{100 * free_seconds / seconds:8.1f}% {memory.bytes / 2 ** 20:8.1f}")


if __name__ == "__main__":
    main()
