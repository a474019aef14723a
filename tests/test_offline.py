"""Nothing touches the network: with sockets blocked, every shipped model loads by name, and a user folder that
lacks a part fails locally with a clear error (never a hub look-up)."""
import socket

import pytest

from imaging.priors import DiffusionPrior, FieldOfExperts, FlowPrior, pretrained_lpn
from imaging.priors.lpn import SHIPPED


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"imaging tried to reach the network: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_every_shipped_model_loads_with_the_network_blocked(no_network):
    for name in ("natural", "faces"):
        assert DiffusionPrior.pretrained(name).num_timesteps == 1000
        assert FlowPrior.pretrained(name) is not None
    for name in SHIPPED:
        assert pretrained_lpn(name).min_core_weight() >= 0
    assert FieldOfExperts.pretrained("denoise-sigma25") is not None


def test_an_incomplete_user_folder_fails_locally(no_network, tmp_path):
    (tmp_path / "vae").mkdir()
    with pytest.raises(FileNotFoundError, match=r"transformer/\).*not a local folder"):
        FlowPrior.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        DiffusionPrior.from_pretrained(tmp_path / "missing")
    with pytest.raises(OSError):  # an empty folder: diffusers' own "no file named ..." error, found locally
        DiffusionPrior.from_pretrained(tmp_path / "vae")
