"""Video captioning data: caption files of several datasets, the built-in dataset's captions, and
the COCO caption metrics (BLEU-4, CIDEr-D)."""

from .formats import CAPTION_FORMATS, CaptionedVideo, CaptionList, read_captions
from .metrics import bleu4, cider_d, tokenize
from .synth import caption_facts, captions_for, facts_correct

__all__ = ["CAPTION_FORMATS", "CaptionList", "CaptionedVideo", "bleu4", "caption_facts", "captions_for",
           "cider_d", "facts_correct", "read_captions", "tokenize"]
