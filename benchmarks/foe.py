"""Benchmark: the field-of-experts gradient ∇_x R (and energy, Hessian-vector product), compiled vs conv2d torch.

R(x) = Σ_i a_i Σ_p φ((k_i ⋆ P x)_p; ν_i) with the smoothed-absolute potential and reflect padding. Contenders, in one
process on the same inputs:
- compiled: `imaging.ops.foe_grad` (`imaging::foe_grad`: filter, φ', adjoint filter fused, no K·H·W intermediate);
- conv2d pipeline: the hand-written torch version a user would write, conv2d -> φ' -> conv_transpose2d -> adjoint of
  the padding (through autograd of F.pad), with K·H·W intermediates;
- torch autograd: `imaging.ops.foe._foe_grad_torch`, autograd of the conv2d energy (the test reference).
Cases: learning size (4 × 256², 48 filters 7×7, as in the FoE paper setting), one large image (1024², 24 filters
5×5), a batch of small crops (32 × 64², 8 filters 5×5). Reported: time (best of --repeats), speed-up, GFLOP/s of the
compiled op (2·2·K·kh·kw flops per pixel: the filter and its adjoint), peak extra memory, max relative difference.
On CUDA also GB/s of the minimum traffic (read x, write the gradient). Target of the issue: >= 2x on CPU.
Run: `python benchmarks/foe.py [--device cuda] [--dtype float64] [--repeats 3]`.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import imaging._ext as ext
from _timing import PeakMemory, best_time, device_bandwidth
from imaging.ops import foe

CASES = {"learning 4x256², K=48 7x7": ((4, 1, 256, 256), (48, 7, 7)),
         "large 1024², K=24 5x5": ((1, 1, 1024, 1024), (24, 5, 5)),
         "crops 32x64², K=8 5x5": ((32, 1, 64, 64), (8, 5, 5))}


def conv2d_pipeline(x, filters, weights, nu):
    """∇_x R with torch ops: conv2d, φ' = z / sqrt(z² + ν²), conv_transpose2d, adjoint of the reflect padding."""
    N, C, H, W = x.shape
    kh, kw = filters.shape[1:]
    pad = (kw // 2, kw // 2, kh // 2, kh // 2)
    with torch.enable_grad():
        planes = x.reshape(N * C, 1, H, W).detach().requires_grad_()
        padded = F.pad(planes, pad, mode="reflect")
    z = F.conv2d(padded.detach(), filters[:, None])
    nu_ = nu[None, :, None, None]
    t = weights[None, :, None, None] * z / torch.sqrt(z * z + nu_ * nu_)
    grad_padded = F.conv_transpose2d(t, filters[:, None])
    return torch.autograd.grad(padded, planes, grad_padded)[0].reshape(N, C, H, W)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device, dtype = args.device, getattr(torch, args.dtype)
    cuda = device.startswith("cuda")
    sync = (lambda: torch.cuda.synchronize()) if cuda else (lambda: None)  # noqa: E731
    peak_bw, peak_note = device_bandwidth(device)
    where = torch.cuda.get_device_name(torch.device(device)) if cuda else f"{torch.get_num_threads()} threads"
    print(f"field-of-experts gradient, {args.dtype}, device {device} ({where}); {ext.describe()}; torch "
          f"{torch.__version__}" + (f"; device bandwidth ≈ {peak_bw:.0f} GB/s ({peak_note})" if peak_bw else ""))
    if not foe.use_kernel(torch.empty(0, dtype=dtype, device=device)):
        print("WARNING: no compiled FoE kernel for this device/dtype: 'compiled' runs the torch reference")
    print(f"{'case':28s} {'method':16s} {'ms':>9s} {'vs comp.':>9s} {'GFLOP/s':>8s} {'GB/s':>7s} {'peak MB':>8s} "
          f"{'rel diff':>9s}")
    gen = torch.Generator().manual_seed(0)
    for case, (shape, filter_shape) in CASES.items():
        x = torch.rand(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        filters = (torch.randn(filter_shape, generator=gen, dtype=torch.float64) / filter_shape[1]).to(x)
        K = filter_shape[0]
        weights = (torch.rand(K, generator=gen, dtype=torch.float64) + 0.1).to(x)
        nu = (torch.rand(K, generator=gen, dtype=torch.float64) * 0.1 + 0.01).to(x)
        contenders = {"compiled": lambda: foe.foe_grad(x, filters, weights, nu),
                      "conv2d pipeline": lambda: conv2d_pipeline(x, filters, weights, nu),
                      "torch autograd": lambda: foe._foe_grad_torch(x, filters, weights, nu)}
        flops = 4 * K * filter_shape[1] * filter_shape[2] * x.numel()
        reference = contenders["torch autograd"]().detach()
        times = {}
        for name, run in contenders.items():
            with PeakMemory(device) as memory:
                out = run()
            times[name] = best_time(run, args.repeats, sync)
            diff = float((out - reference).abs().max() / reference.abs().max())
            gbps = f"{2 * x.numel() * x.element_size() / times[name] / 1e9:7.1f}" if cuda else f"{'-':>7s}"
            rate = f"{flops / times[name] / 1e9:8.1f}" if name == "compiled" else f"{'-':>8s}"
            print(f"{case:28s} {name:16s} {1e3 * times[name]:9.2f} {times[name] / times['compiled']:8.2f}x "
                  f"{rate} {gbps} {memory.bytes / 2**20:8.1f} {diff:9.1e}")
        best_torch = min(times["conv2d pipeline"], times["torch autograd"])
        print(f"{'':28s} -> compiled is {best_torch / times['compiled']:.2f}x the best torch version "
              f"(conv2d pipeline {times['conv2d pipeline'] / times['compiled']:.2f}x, autograd "
              f"{times['torch autograd'] / times['compiled']:.2f}x)")
    # energy and Hessian-vector product at the learning size
    shape, filter_shape = CASES["learning 4x256², K=48 7x7"]
    x = torch.rand(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    v = torch.randn(shape, generator=gen, dtype=torch.float64).to(x)
    filters = (torch.randn(filter_shape, generator=gen, dtype=torch.float64) / 7).to(x)
    weights, nu = torch.full((48,), 0.5).to(x), torch.full((48,), 0.05).to(x)
    for name, fast, slow in (("energy", lambda: foe.foe_energy(x, filters, weights, nu),
                              lambda: foe._foe_energy_torch(x, filters, weights, nu)),
                             ("hvp", lambda: foe.foe_hvp(x, v, filters, weights, nu),
                              lambda: foe._foe_hvp_torch(x, v, filters, weights, nu))):
        fast(), slow()
        t_fast, t_slow = best_time(fast, args.repeats, sync), best_time(slow, args.repeats, sync)
        print(f"{'learning 4x256², K=48 7x7':28s} {name + ' compiled':16s} {1e3 * t_fast:9.2f}   vs torch "
              f"{1e3 * t_slow:.2f} ms: {t_slow / t_fast:.2f}x")


if __name__ == "__main__":
    main()
