"""Caption metrics as the COCO caption evaluation (pycocoevalcap) computes them: BLEU-4 and CIDEr-D.

Both take ``candidates`` {video id: the generated caption} and ``references`` {video id: its
reference captions}, tokenise every sentence with :func:`tokenize`, and score the whole set:

- :func:`bleu4`: corpus-level BLEU-4 (Papineni et al. 2002) as ``pycocoevalcap/bleu``: clipped
  n-gram counts (a candidate n-gram counts at most as often as in its most generous reference)
  and candidate lengths summed over the set, the geometric mean of the 1- to 4-gram precisions,
  and a brevity penalty ``exp(1 - r / c)`` when ``c < r``, where ``c`` is the candidates' total
  length and ``r`` the sum of each candidate's "closest" reference length (the shorter on a tie).
- :func:`cider_d`: CIDEr-D (Vedantam et al. 2015) as ``pycocoevalcap/cider``, which COCO reports as
  "CIDEr": tf-idf vectors of 1- to 4-grams with document frequencies counted over the references
  of the evaluated set (``idf = log(videos) - log(max(1, df))``), a candidate's n-gram weights
  clipped at the reference's, a Gaussian length penalty ``exp(-delta^2 / (2 * 6^2))``, the mean over
  n and over the references, times 10, averaged over the videos. As pycocoevalcap does, ``delta``
  is the difference of the two sentences' bigram counts.

:func:`tokenize` stands in for pycocoevalcap's PTBTokenizer (Stanford CoreNLP's, which needs
Java): it lower-cases, splits off punctuation and the clitics ``n't 's 're 've 'll 'd 'm`` the way
the PTB tokenizer does, keeps hyphenated words and numbers such as ``3.5`` or ``1,000`` whole, and
drops the tokens pycocoevalcap drops (``' '' ` `` . ? ! , : ; - -- ...``), double quotes and
brackets. On ordinary captions the tokens are the same; exotic text (URLs, emoticons) can differ.
"""

from __future__ import annotations

import math
import re
from collections import Counter

# pycocoevalcap/tokenizer/ptbtokenizer.py's PUNCTUATIONS (and what PTB writes for quotes and
# brackets), removed after tokenising.
PUNCTUATION = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";", '"',
               "(", ")", "[", "]", "{", "}"}
_TOKEN = re.compile(r"""\d+(?:[.,:]\d+)+            # 3.5, 1,000, 10:30
                      | [^\W_]+(?=n't\b)            # do|n't, ca|n't
                      | n't\b | '(?:s|re|ve|ll|d|m)\b  # clitics
                      | [^\W_]+(?:[-&][^\W_]+)*     # words, counter-clockwise
                      | \.\.\. | -- | \S            # punctuation, any other symbol
                      """, re.VERBOSE)


def tokenize(sentence: str) -> list[str]:
    """Lower-cased PTB-style tokens of a sentence, punctuation removed (see the module's notes)."""
    return [t for t in _TOKEN.findall(sentence.lower()) if t not in PUNCTUATION]


def ngrams(words: list[str], n: int = 4) -> Counter:
    """Counts of every 1- to n-gram (tuples of words) of a sentence."""
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _tokenised(candidates: dict, references: dict) -> list[tuple[list[str], list[list[str]]]]:
    if set(candidates) != set(references):
        lacking = sorted(map(str, set(candidates) ^ set(references)))
        raise ValueError(f"candidates and references must have the same ids; {len(lacking)} differ: "
                         f"{', '.join(lacking[:5])}")
    pairs = []
    for key, candidate in candidates.items():
        refs = references[key]
        if isinstance(refs, str) or not refs:
            raise ValueError(f"references[{key!r}] must be a non-empty list of captions")
        pairs.append((tokenize(candidate), [tokenize(r) for r in refs]))
    return pairs


def bleu4(candidates: dict, references: dict[object, list[str]]) -> float:
    """Corpus-level BLEU-4 in [0, 1] of ``candidates`` {id: caption} against ``references``
    {id: [captions]}, as pycocoevalcap's ``Bleu(4)`` (its fourth number)."""
    n = 4
    small, tiny = 1e-9, 1e-15  # pycocoevalcap's: a zero count gives ~0, never a division by zero
    correct, guess = [0] * n, [0] * n
    test_length = ref_length = 0
    for words, refs in _tokenised(candidates, references):
        counts = ngrams(words, n)
        best = Counter()  # each n-gram's largest count in one reference
        for ref in refs:
            best |= ngrams(ref, n)
        for gram, count in counts.items():
            correct[len(gram) - 1] += min(count, best[gram])
        for k in range(n):
            guess[k] += max(0, len(words) - k)
        test_length += len(words)
        ref_length += min((abs(len(r) - len(words)), len(r)) for r in refs)[1]  # "closest"
    product = math.prod((correct[k] + tiny) / (guess[k] + small) for k in range(n))
    score = product ** (1 / n)
    ratio = (test_length + tiny) / (ref_length + small)
    return score * math.exp(1 - 1 / ratio) if ratio < 1 else score


def cider_d(candidates: dict, references: dict[object, list[str]], sigma: float = 6.0) -> float:
    """CIDEr-D of ``candidates`` {id: caption} against ``references`` {id: [captions]}, as
    pycocoevalcap's ``Cider()`` (the "CIDEr" COCO reports; 0 to about 10)."""
    n = 4
    pairs = [(ngrams(words, n), [ngrams(r, n) for r in refs])
             for words, refs in _tokenised(candidates, references)]
    if not pairs:
        return 0.0
    frequency = Counter(gram for _, refs in pairs for gram in set().union(*refs))
    log_videos = math.log(len(pairs))

    def vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        """tf-idf weights per n, their norms, and the bigram count (pycocoevalcap's "length")."""
        weights: list[dict] = [{} for _ in range(n)]
        for gram, tf in counts.items():
            weights[len(gram) - 1][gram] = tf * (log_videos - math.log(max(1.0, frequency[gram])))
        norms = [math.sqrt(sum(w * w for w in level.values())) for level in weights]
        return weights, norms, sum(tf for gram, tf in counts.items() if len(gram) == 2)

    scores = []
    for counts, refs in pairs:
        vec, norm, length = vector(counts)
        total = 0.0
        for ref in refs:
            vec_ref, norm_ref, length_ref = vector(ref)
            penalty = math.exp(-((length - length_ref) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                value = sum(min(w, vec_ref[k].get(g, 0.0)) * vec_ref[k].get(g, 0.0)
                            for g, w in vec[k].items())
                if norm[k] and norm_ref[k]:
                    value /= norm[k] * norm_ref[k]
                total += value * penalty / n  # the mean over n
        scores.append(10.0 * total / len(refs))
    return sum(scores) / len(scores)
