"""Priors / regularisers: value, gradient and prox where one exists (a missing prox raises, never approximates)."""
from imaging.priors.foe import FieldOfExperts, UnrolledFoE
from imaging.priors.generative import DiffusionPrior, DiffusionVelocity, FlowPrior, PromptEmbeddings
from imaging.priors.lpn import LPN1d, LPNConv, LPNPatch, load_lpn, pretrained_lpn, prox_in_patches
from imaging.priors.tv import SmoothedTV, TotalVariation, tv_denoise

__all__ = ["DiffusionPrior", "DiffusionVelocity", "FlowPrior", "PromptEmbeddings", "LPN1d", "LPNConv", "LPNPatch",
           "load_lpn", "pretrained_lpn", "prox_in_patches", "FieldOfExperts", "UnrolledFoE", "TotalVariation",
           "SmoothedTV", "tv_denoise"]
