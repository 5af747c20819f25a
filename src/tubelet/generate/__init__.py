"""Autoregressive and speculative sampling for causal LMs with a key/value cache."""

from .autoregressive import autoregressive_generate
from .models import CausalLM, HFCausalLM, TubeletLM
from .sampling import Sampling, probabilities, sample, verify
from .speculative import speculative_generate
from .stats import Generation, Stats, expected_tokens_per_step

__all__ = [
    "CausalLM", "Generation", "HFCausalLM", "Sampling", "Stats", "TubeletLM",
    "autoregressive_generate", "expected_tokens_per_step", "probabilities", "sample",
    "speculative_generate", "verify",
]
