"""Video captioning data: caption files of several datasets, the built-in dataset's captions, and
the COCO caption metrics (BLEU-4, CIDEr-D)."""

from .metrics import bleu4, cider_d, tokenize
from .synth import caption_facts, captions_for, facts_correct

__all__ = ["bleu4", "caption_facts", "captions_for", "cider_d", "facts_correct", "tokenize"]
