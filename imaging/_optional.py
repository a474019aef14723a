"""Optional dependencies: a feature whose package is missing says which extra of imaging installs it."""
from __future__ import annotations

import importlib

EXTRAS = {"diffusers": ("diffusers", "generative"), "accelerate": ("accelerate", "generative"),
          "sklearn": ("scikit-learn", "all"), "matplotlib": ("matplotlib", "plots")}


def require(module: str, feature: str):
    """Import `module`, or raise an ImportError naming the `feature` that needs it and the extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        root = module.split(".")[0]
        if root not in EXTRAS or (error.name or "").split(".")[0] != root:
            raise
        package, extra = EXTRAS[root]
        raise ModuleNotFoundError(f"{feature} needs the optional package {package}: pip install "
                                  f"'imaging[{extra}]' (or pip install {package})", name=error.name) from None
