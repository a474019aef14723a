"""Regression tests for the reliability report (issue 16), category 12 of benchmarks/robustness.py: corrupt or
forged weight files give a clear error naming the file and what is wrong, never a hang or a silently wrong model."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import imaging
from imaging.priors import LPN1d, FieldOfExperts, load_lpn

WEIGHTS = Path(imaging.__file__).resolve().parent / "weights"
LPN_SETTINGS = {"architecture": "LPN1d", "config": {"hidden": 8, "depth": 3}}


def write(path: Path, tensors: dict, settings=None, raw: str | None = None) -> Path:
    text = raw if raw is not None else json.dumps(settings) if settings is not None else None
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(path),
              metadata=None if text is None else {"settings": text})
    return path


def lpn1d_tensors() -> dict:
    return dict(LPN1d(hidden=8, depth=3).state_dict())


def foe_tensors(K: int = 2, k: int = 3) -> dict:
    return {"filters": torch.randn(K, k, k, generator=torch.Generator().manual_seed(0)),
            "log_weights": torch.zeros(K), "log_nu": torch.full((K,), -2.0)}


def test_a_million_layer_lpn_config_is_refused_before_anything_is_built(tmp_path):
    """12/lpn-million-layers: the depth in the metadata is checked against the stored tensors first (it hung)."""
    start = time.perf_counter()
    dummy = write(tmp_path / "dummy.safetensors", {"dummy": torch.zeros(1)},
                  {"architecture": "LPN1d", "config": {"depth": 10 ** 6}})
    with pytest.raises(ValueError, match=r"dummy\.safetensors: the stored tensors do not match"):
        load_lpn(dummy)
    forged = write(tmp_path / "forged.safetensors", lpn1d_tensors(),
                   {"architecture": "LPN1d", "config": {"hidden": 8, "depth": 10 ** 6}})
    with pytest.raises(ValueError, match=r"forged\.safetensors: .*do not match.*depth = 1000000 in the config, 3"):
        load_lpn(forged)
    conv = write(tmp_path / "conv.safetensors", {"first.weight": torch.zeros(4, 1, 3, 3)},
                 {"architecture": "LPNConv", "config": {"hidden": 4, "channels": 10 ** 9}})
    with pytest.raises(ValueError, match="channels = 1000000000 in the config, 1"):
        load_lpn(conv)
    assert time.perf_counter() - start < 10.0
    write(forged, lpn1d_tensors(), LPN_SETTINGS)
    assert isinstance(load_lpn(forged), LPN1d)


def test_non_finite_lpn_weights_are_refused_on_load(tmp_path):
    """12/lpn-nan-weights: prox answered NaN."""
    tensors = lpn1d_tensors()
    tensors["core.0.weight"][0, 0] = float("nan")
    path = write(tmp_path / "nan.safetensors", tensors, LPN_SETTINGS)
    with pytest.raises(ValueError, match=r"nan\.safetensors: tensor 'core.0.weight' holds non-finite values"):
        load_lpn(path)


@pytest.mark.parametrize("content", [b"this is not a safetensors file at all", b""], ids=["text", "empty"])
@pytest.mark.parametrize("loader", [load_lpn, FieldOfExperts.load], ids=["load_lpn", "FieldOfExperts.load"])
def test_a_file_that_is_not_safetensors_gets_an_error_naming_it(tmp_path, content, loader):
    """12/lpn-not-safetensors, 12/lpn-empty-file: SafetensorError 'header too large / too small' without the path."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file \(.*header"):
        loader(path)


@pytest.mark.parametrize("raw, message", [("{oops", "unreadable settings metadata"),
                                          ("[1]", r"has settings metadata \[1\]; expected a JSON object")],
                         ids=["bad-json", "a-list"])
def test_field_of_experts_settings_that_are_not_a_json_object(tmp_path, raw, message):
    """12/foe-settings-bad-json (JSONDecodeError), 12/foe-settings-a-list (AttributeError)."""
    path = write(tmp_path / "foe.safetensors", foe_tensors(), raw=raw)
    with pytest.raises(ValueError, match=rf"FieldOfExperts.load: .*foe\.safetensors.*{message}"):
        FieldOfExperts.load(path)


def test_field_of_experts_tensor_shapes_and_values_are_checked(tmp_path):
    """12/foe-weights-wrong-length (a torch expand error), and non-finite filters are refused on load."""
    tensors = foe_tensors()
    tensors["log_weights"] = torch.zeros(3)
    path = write(tmp_path / "foe.safetensors", tensors, {})
    with pytest.raises(ValueError, match=r"foe\.safetensors: tensors 'filters', 'log_weights', 'log_nu' must have "
                                         r"shapes \(K, kh, kw\), \(K,\), \(K,\), got \[\(2, 3, 3\), \(3,\), \(2,\)\]"):
        FieldOfExperts.load(path)
    tensors = foe_tensors()
    tensors["filters"][0, 0, 0] = float("inf")
    write(path, tensors, {})
    with pytest.raises(ValueError, match="tensor 'filters' holds non-finite values"):
        FieldOfExperts.load(path)
    write(path, foe_tensors(), {"potential": "student"})
    assert FieldOfExperts.load(path).potential == "student"


# --- diffusers folders --------------------------------------------------------------------------------------------
@pytest.fixture
def ddpm(tmp_path):
    pytest.importorskip("diffusers")
    folder = tmp_path / "ddpm"
    shutil.copytree(WEIGHTS / "ddpm_natural", folder)
    return folder


def _rewrite(file: Path, change) -> None:
    tensors = load_file(str(file))
    change(tensors)
    save_file(tensors, str(file))


def test_a_unet_with_missing_or_unexpected_weights_is_refused(ddpm):
    """12/diffusion-unet-weights-missing-tensors: diffusers initialised the missing half at random."""
    from imaging.priors import DiffusionPrior

    file = ddpm / "unet" / "diffusion_pytorch_model.safetensors"
    original = load_file(str(file))
    dropped = sorted(original)[: len(original) // 2]
    _rewrite(file, lambda t: [t.pop(key) for key in dropped])
    unet = re.escape(str(ddpm / "unet"))
    with pytest.raises(ValueError, match=rf"weights files in {unet} do not match its config.json: {len(dropped)} "
                                         rf"missing keys \(first: \['{dropped[0]}'"):
        DiffusionPrior.from_pretrained(ddpm)
    save_file({**original, "extra.weight": torch.zeros(2)}, str(file))
    with pytest.raises(ValueError, match=r"1 unexpected keys \(first: \['extra.weight'\]\)"):
        DiffusionPrior.from_pretrained(ddpm)
    save_file(original, str(file))
    assert DiffusionPrior.from_pretrained(ddpm).denoise(torch.rand(1, 1, 16, 16), 0.1).isfinite().all()


def test_a_unet_with_non_finite_weights_is_refused(ddpm):
    """12/diffusion-unet-weights-nan."""
    from imaging.priors import DiffusionPrior

    _rewrite(ddpm / "unet" / "diffusion_pytorch_model.safetensors",
             lambda t: t["conv_in.weight"].view(-1)[0].fill_(float("nan")))
    with pytest.raises(ValueError, match=r"ddpm/unet hold non-finite values \(NaN or inf\) in 'conv_in.weight'"):
        DiffusionPrior.from_pretrained(ddpm)


def test_a_unet_config_far_larger_than_its_weights_is_refused_before_allocating(ddpm):
    """12/diffusion-unet-config-huge-channels: it failed in the allocator (17 TB)."""
    from imaging.priors import DiffusionPrior

    config_path = ddpm / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["block_out_channels"] = [2 ** 20] * 3
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unet/config.json describes a model of .* parameters but the weights files "
                                         r"in .* \(diffusion_pytorch_model.safetensors\) hold .*block_out_channels"):
        DiffusionPrior.from_pretrained(ddpm)


def test_a_flow_folder_with_non_finite_weights_is_refused(tmp_path):
    """The same checks for FlowPrior.from_pretrained (transformer and autoencoder)."""
    pytest.importorskip("diffusers")
    from imaging.priors import FlowPrior

    folder = tmp_path / "flow"
    shutil.copytree(WEIGHTS / "flow_faces32", folder)
    file = folder / "vae" / "diffusion_pytorch_model.safetensors"
    _rewrite(file, lambda t: t[sorted(t)[0]].view(-1)[0].fill_(float("inf")))
    with pytest.raises(ValueError, match=r"FlowPrior.from_pretrained: the weights files in .*flow/vae hold "
                                         r"non-finite values"):
        FlowPrior.from_pretrained(folder)
