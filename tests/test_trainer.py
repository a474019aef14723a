"""The training engine (imaging.learning.Trainer) and the patch dataset it reads."""
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from imaging.data import PatchDataset, load_folder, read_image
from imaging.learning.diffusion_training import DiffusionNoise, EpsilonLoss, natural_unet
from imaging.learning.trainer import CHECKPOINT, LOG, Trainer

HERE = Path(__file__).resolve().parent
TRAIN400 = HERE.parents[1] / "shared" / "datasets" / "train400"


def tiny_images():
    return [torch.rand(1, 20 + 4 * k, 24, generator=torch.Generator().manual_seed(k)) for k in range(3)]


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Softplus(),
                               torch.nn.Conv2d(4, 1, 3, padding=1)).double()


def denoising_loss(model, batch):
    return (model(batch["noisy"].double()) - batch["clean"].double()).pow(2).mean()


def trainer(output_dir=None, steps=12, **kwargs):
    dataset = PatchDataset(tiny_images(), 8, sigma=(0.05, 0.2))
    options = dict(batch_size=4, steps=steps, lr=1e-2, warmup=2, output_dir=output_dir, checkpoint_every=5,
                   log_every=3, cpu=True)
    return Trainer(tiny_model(), denoising_loss, dataset, **{**options, **kwargs})


# --- data ---------------------------------------------------------------------------------------------------------
def test_read_image_kinds(tmp_path):
    import imageio.v3 as iio
    import tifffile

    grey = (np.arange(48, dtype=np.uint8).reshape(6, 8) * 5)
    iio.imwrite(tmp_path / "a.png", grey)
    tifffile.imwrite(tmp_path / "b.tif", grey.astype(np.uint16) * 257)
    np.save(tmp_path / "c.npy", grey.astype(np.float32) / 255)
    iio.imwrite(tmp_path / "d.png", np.stack([grey] * 3, axis=-1))
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_folder(tmp_path)
    assert len(images) == 4 and all(im.shape == (1, 1, 6, 8) for im in images)
    for im in images[1:]:
        torch.testing.assert_close(im, images[0], atol=2e-3, rtol=0)
    assert read_image(tmp_path / "d.png", channels=None).shape == (3, 6, 8)
    with pytest.raises(ValueError, match="not one of the supported"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_folder(tmp_path / "empty")


def test_patch_dataset_is_deterministic_and_augments():
    dataset = PatchDataset(tiny_images(), 8, sigma=(0.1, 0.3), seed=3)
    first, again = dataset[5], dataset[5]
    for key in ("clean", "noisy", "sigma"):
        assert torch.equal(first[key], again[key])
    assert first["clean"].shape == (1, 8, 8)
    sigmas = torch.stack([dataset[i]["sigma"] for i in range(200)])
    assert 0.1 <= sigmas.min() and sigmas.max() <= 0.3 and sigmas.std() > 0.03
    residual = torch.stack([dataset[i]["noisy"] - dataset[i]["clean"] for i in range(200)])
    assert abs(residual.std().item() - (sigmas ** 2).mean().sqrt().item()) < 0.01
    assert not torch.equal(PatchDataset(tiny_images(), 8, seed=4)[5]["clean"], first["clean"])
    with pytest.raises(ValueError, match="patch_size"):
        PatchDataset(tiny_images(), 30)
    with pytest.raises(ValueError, match="sigma"):
        PatchDataset(tiny_images(), 8, sigma=(0.3, 0.1))


@pytest.mark.skipif(not TRAIN400.is_dir(), reason="../shared/datasets/train400 is not present (training data)")
def test_patch_dataset_reads_train400():
    dataset = PatchDataset(TRAIN400, 64)
    assert len(dataset.images) == 400 and dataset[0]["clean"].shape == (1, 64, 64)
    assert 0 <= dataset[0]["clean"].min() and dataset[0]["clean"].max() <= 1


# --- engine -------------------------------------------------------------------------------------------------------
def test_schedule_and_ema_come_from_diffusers():
    from diffusers.training_utils import EMAModel

    t = trainer()
    assert isinstance(t.ema, EMAModel)
    assert type(t.schedule).__name__ == "LambdaLR"
    rates = []
    for _ in range(12):
        t.train_step()
        rates.append(t.schedule.get_last_lr()[0])
    assert rates[:2] == pytest.approx([5e-3, 1e-2])  # the 2-step linear warmup
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)  # cosine decay to 0 at the last step
    ema, model = t.ema_model(), t.model
    assert not all(torch.equal(a, b) for a, b in zip(ema.parameters(), model.parameters()))


def test_training_lowers_the_loss():
    result = trainer(steps=60, log_every=10).fit()
    assert result.steps == 60 and result.history[-1][1] < 0.5 * result.history[0][1]


def test_resume_gives_the_same_weights(tmp_path):
    whole = trainer(tmp_path / "whole")
    whole.fit()
    interrupted = trainer(tmp_path / "parts")
    while interrupted.step < 7:  # killed after step 7: its last checkpoint is step 5
        interrupted.train_step()
        if interrupted.step % 5 == 0:
            interrupted.save_checkpoint()
    resumed = trainer(tmp_path / "parts")
    result = resumed.fit()
    assert result.resumed_from == 5 and result.steps == 12
    a, b = whole.state_tensors(), resumed.state_tensors()
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a) and any(k.startswith("optimizer.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = [json.loads(line) for line in (tmp_path / "parts" / LOG).read_text().splitlines()]
    assert [entry["step"] for entry in log] == [6, 9, 12]
    assert (tmp_path / "whole" / CHECKPOINT).exists()
    assert not [p for p in (tmp_path / "whole").iterdir() if p.name.endswith(".tmp")]


def test_time_budget_stops_with_a_checkpoint(tmp_path):
    t = trainer(tmp_path, steps=1000)
    result = t.fit(max_seconds=0.0)
    assert result.steps == 0 and (tmp_path / CHECKPOINT).exists()


def test_bad_arguments_are_named():
    dataset = PatchDataset(tiny_images(), 8)
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(tiny_model(), denoising_loss, dataset, batch_size=0, steps=1)
    with pytest.raises(ValueError, match="mixed_precision"):
        Trainer(tiny_model(), denoising_loss, dataset, batch_size=2, steps=1, mixed_precision="fp8")
    with pytest.raises(TypeError, match="model"):
        Trainer(lambda x: x, denoising_loss, dataset, batch_size=2, steps=1)


def test_non_finite_loss_raises():
    dataset = PatchDataset(tiny_images(), 8, sigma=0.1)
    t = Trainer(tiny_model(), lambda m, b: m(b["noisy"].double()).sum() * float("nan"), dataset, batch_size=2,
                steps=3, cpu=True)
    with pytest.raises(FloatingPointError, match="step 1"):
        t.fit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_agents(nodes: int, script: str, output: str, env: dict, timeout: float = 240, attempts: int = 2) -> list:
    """Exit codes of `nodes` torchrun agents (2 processes in all) meeting at a fresh port. A rendezvous that hangs
    (seen once in ~20 runs on a loaded 2-core machine; the run takes ~20 s) is killed, process groups and all, and
    tried again on another port."""
    for attempt in range(attempts):
        port = str(free_port())
        agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes),
                                    "--nproc_per_node", str(2 // nodes), "--node_rank", str(rank), "--master_addr",
                                    "127.0.0.1", "--master_port", port, script, output], env=env,
                                   start_new_session=True) for rank in range(nodes)]
        try:
            return [agent.wait(timeout=timeout) for agent in agents]
        except subprocess.TimeoutExpired:
            for agent in agents:  # SIGTERM: the agent stops its workers (they run in sessions of their own)
                agent.terminate()
            for agent in agents:
                try:
                    agent.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(agent.pid, signal.SIGKILL)
                    agent.wait()
            if attempt == attempts - 1:
                raise


@pytest.mark.parametrize("nodes", [1, 2], ids=["one-node", "two-nodes"])
def test_two_processes_make_the_same_update_as_one(tmp_path, nodes):
    """torchrun with two CPU processes (gloo, DDP through accelerate), each on half of the global batch, reaches the
    weights of one process on the whole batch: two processes on one node, or one on each of two nodes (two torchrun
    agents on this machine meeting at a c10d rendezvous, as on a cluster)."""
    from safetensors import safe_open

    script = str(HERE / "distributed_training.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, script, str(one)], check=True, env=env, timeout=600)
    assert run_agents(nodes, script, str(two), env) == [0] * nodes
    with safe_open(str(one), "pt") as a, safe_open(str(two), "pt") as b:
        assert (a.metadata()["processes"], b.metadata()["processes"]) == ("1", "2")
        assert set(a.keys()) == set(b.keys())
        moved = 0.0
        for key in a.keys():
            torch.testing.assert_close(a.get_tensor(key), b.get_tensor(key), rtol=1e-10, atol=1e-12)
            moved = max(moved, a.get_tensor(key).abs().max().item())
        assert moved > 0


# --- diffusion objective ------------------------------------------------------------------------------------------
def test_epsilon_loss_trains_a_unet_on_any_size():
    dataset = PatchDataset(tiny_images(), 16, transform=DiffusionNoise(1000))
    item = dataset[0]
    assert item["noise"].shape == item["clean"].shape and 0 <= int(item["timestep"]) < 1000
    torch.manual_seed(0)
    unet = natural_unet(block_out_channels=(8, 16), norm_num_groups=4, sample_size=16)
    loss = EpsilonLoss()
    t = Trainer(unet, loss, dataset, batch_size=4, steps=2, lr=1e-3, cpu=True)
    t.fit()
    with torch.no_grad():  # fully convolutional: a size the crops never had
        assert unet(torch.randn(1, 1, 24, 40), torch.tensor([10])).sample.shape == (1, 1, 24, 40)
    batch = {k: v for k, v in t.batch(0).items()}
    batch["noise"] = torch.zeros_like(batch["noise"])
    zero = EpsilonLoss()(lambda x, step: torch.zeros_like(x), batch)
    assert zero.item() == 0.0


def test_warm_start_continues_the_schedule():
    finished = trainer(steps=12)
    finished.fit()
    weights = finished.ema_model().state_dict()
    continued = trainer(steps=12)
    continued.warm_start(weights, 6)
    reference = trainer(steps=12)
    for _ in range(6):
        reference.train_step()
    assert continued.step == 6
    assert continued.schedule.get_last_lr()[0] == pytest.approx(reference.schedule.get_last_lr()[0])
    for a, b in zip(continued.model.parameters(), finished.ema_model().parameters()):
        assert torch.equal(a, b)
    assert continued.fit().resumed_from == 6
    with pytest.raises(ValueError, match="step"):
        continued.warm_start(weights, 13)


def test_bf16_autocast_keeps_float32_weights():
    """mixed_precision="bf16" (what "auto" picks on CUDA) runs the forward in bfloat16 and keeps float32 weights and
    AdamW moments; checked here on the CPU."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Softplus(),
                                torch.nn.Conv2d(4, 1, 3, padding=1))
    seen = []
    model[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))

    def loss(net, batch):  # accelerate hands the output back in float32
        return (net(batch["noisy"]) - batch["clean"]).pow(2).mean()

    t = Trainer(model, loss, PatchDataset(tiny_images(), 8, sigma=0.1), batch_size=4, steps=3, cpu=True,
                mixed_precision="bf16")
    t.fit()
    assert seen == [torch.bfloat16] * 3
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    assert all(v.dtype == torch.float32 for k, v in t.state_tensors().items() if "exp_avg" in k)
