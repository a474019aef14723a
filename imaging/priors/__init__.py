"""Priors / regularisers: value, gradient and prox where one exists (a missing prox raises, never approximates)."""
from imaging.priors.tv import TotalVariation, tv_denoise

__all__ = ["TotalVariation", "tv_denoise"]
