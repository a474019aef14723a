"""Priors / regularisers: value, gradient and prox where one exists (a missing prox raises, never approximates)."""
from imaging.priors.foe import FieldOfExperts
from imaging.priors.generative import DiffusionPrior, FlowPrior, PromptEmbeddings
from imaging.priors.tv import TotalVariation, tv_denoise

__all__ = ["DiffusionPrior", "FlowPrior", "PromptEmbeddings", "FieldOfExperts", "TotalVariation", "tv_denoise"]
