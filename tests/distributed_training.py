"""Helper of test_trainer.py (not a test): train a tiny convolutional denoiser with `imaging.learning.Trainer` for a
few steps and write the final weights to argv[1] (from the main process). Run it with one process or under
`torchrun --nproc_per_node 2` (gloo on the CPU): the global batch, hence the update, is the same."""
import os
import sys

import torch
from safetensors.torch import save_file

from imaging.data import PatchDataset
from imaging.learning.trainer import Trainer


def main() -> None:
    torch.set_num_threads(1)
    images = [torch.rand(1, 24, 24, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    dataset = PatchDataset(images, 8, sigma=(0.05, 0.2), seed=1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Softplus(),
                                torch.nn.Conv2d(8, 1, 3, padding=1)).double()

    def loss(net, batch):
        return (net(batch["noisy"].double()) - batch["clean"].double()).pow(2).mean()

    trainer = Trainer(model, loss, dataset, batch_size=8, steps=5, lr=1e-2, warmup=1, cpu=True)
    trainer.fit()
    if trainer.accelerator.is_main_process:
        save_file({k: v.contiguous() for k, v in trainer.state_tensors().items()}, sys.argv[1],
                  metadata={"processes": str(trainer.accelerator.num_processes)})
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    # Leave without tearing down the trainer: a few times in ~20 runs on a loaded machine, a worker that had written
    # its result hung in a destructor (as main returned) after its peer had exited, and the test waited on it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
