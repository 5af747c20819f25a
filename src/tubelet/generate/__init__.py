"""Autoregressive and speculative sampling for causal LMs with a key/value cache."""

from .autoregressive import autoregressive_generate
from .drafts import Draft, FeatureDraft, ModelDraft, NGramDraft, Proposal, prompt_lookup
from .models import CausalLM, FeatureLM, HFCausalLM, TubeletLM
from .sampling import Sampling, probabilities, sample, verify
from .speculative import speculative_generate
from .stats import Generation, Stats, expected_tokens_per_step

__all__ = [
    "CausalLM", "Draft", "FeatureDraft", "FeatureLM", "Generation", "HFCausalLM", "ModelDraft", "NGramDraft", "Proposal", "Sampling",
    "Stats", "TubeletLM", "autoregressive_generate", "expected_tokens_per_step", "probabilities",
    "prompt_lookup", "sample", "speculative_generate", "verify",
]
