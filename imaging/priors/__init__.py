"""Priors / regularisers: value, gradient and prox where one exists (a missing prox raises, never approximates)."""
from imaging.priors.foe import FieldOfExperts
from imaging.priors.tv import TotalVariation, tv_denoise

__all__ = ["FieldOfExperts", "TotalVariation", "tv_denoise"]
