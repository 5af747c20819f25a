"""BLEU-4 and CIDEr-D: worked examples counted by hand, and pycocoevalcap's scorers when installed."""

from __future__ import annotations

import math
import random

import pytest

from tubelet.captions import bleu4, cider_d, tokenize


def test_tokenize_lower_cases_and_drops_ptb_punctuation():
    assert tokenize('A cat\'s "ball" (red) doesn\'t turn counter-clockwise; 3.5 times... OK?') == [
        "a", "cat", "'s", "ball", "red", "does", "n't", "turn", "counter-clockwise", "3.5", "times", "ok"]
    assert tokenize("  ") == []


def test_a_candidate_equal_to_its_reference_scores_bleu_one():
    refs = {"v1": ["A man is slicing a tomato."], "v2": ["Two dogs play in the snow", "dogs in snow"]}
    cands = {"v1": "a man is slicing a tomato", "v2": "two dogs play in the snow."}
    assert bleu4(cands, refs) == pytest.approx(1.0, abs=1e-9)


def test_bleu4_worked_example():
    # "a cat sits on the red mat" against "a cat sits on the mat": matched / candidate n-grams are
    # 6/7 (not "red"), 4/6 (not "the red", "red mat"), 3/5 and 2/4; 7 words >= 6, no brevity penalty.
    assert bleu4({0: "a cat sits on the red mat"}, {0: ["a cat sits on the mat"]}) == pytest.approx(
        (6 / 7 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25, rel=1e-9)
    # The other way round: 6/6, 4/5, 3/4, 2/3, and 6 words against 7: penalty exp(1 - 7/6).
    assert bleu4({0: "a cat sits on the mat"}, {0: ["a cat sits on the red mat"]}) == pytest.approx(
        (1 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25 * math.exp(1 - 7 / 6), rel=1e-9)
    # The "closest" reference length: 4 and 8 words are both 2 from 6; the shorter (4) counts.
    refs = {0: ["a cat sits on the mat", "one two three four", "one two three four five six seven eight"]}
    assert bleu4({0: "a cat sits on the mat"}, refs) == pytest.approx(1.0)
    # Corpus level: the counts are summed over the videos, not the scores averaged. Two 4-word
    # candidates, one right and one sharing nothing but its first word: 5/8, 3/6, 2/4, 1/2.
    score = bleu4({0: "w x y z", 1: "w q r s"}, {0: ["w x y z"], 1: ["w a b c"]})
    assert score == pytest.approx((5 / 8 * 3 / 6 * 2 / 4 * 1 / 2) ** 0.25, rel=1e-9)


def test_cider_d_worked_example():
    # Two videos: document frequencies "a" 2, every other n-gram 1, idf log(2) - log(df).
    refs = {"A": ["a cat"], "B": ["a dog"]}
    # Identical two-word captions: the 1- and 2-gram cosines are 1, 3- and 4-grams are empty (0);
    # mean over n 0.5, no length penalty, times 10.
    assert cider_d({"A": "a cat", "B": "a dog"}, refs) == pytest.approx(5.0)
    # "a cat cat": unigram weights (a 0, cat 2 log 2) clipped at the reference's (cat log 2): cosine
    # log2^2 / (2 log2 * log2) = 1/2; bigrams (a cat, cat cat) against (a cat): 1/sqrt(2); the
    # trigram is not in the reference (0). Its 2 bigrams against 1: penalty exp(-1 / (2 * 6^2)).
    first = 10 * (0.5 + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    assert cider_d({"A": "a cat cat", "B": "a dog"}, refs) == pytest.approx((first + 5.0) / 2)
    # One video: every reference n-gram is in every "document", idf 0, nothing scores.
    assert cider_d({"A": "a cat"}, {"A": ["a cat"]}) == 0.0


def test_mismatched_ids_are_refused():
    with pytest.raises(ValueError, match="same ids"):
        bleu4({1: "a"}, {2: ["a"]})
    with pytest.raises(ValueError, match="non-empty list"):
        cider_d({1: "a"}, {1: "a"})


def test_equal_to_pycocoevalcap_on_pre_tokenised_text():
    bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    rng = random.Random(0)
    words = "a the cat dog runs jumps over red blue big small man woman is on table , . !".split()
    for _ in range(3):
        refs = {i: [" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(rng.randint(1, 5))]
                for i in range(25)}
        cands = {i: " ".join(rng.choices(words, k=rng.randint(1, 12))) for i in range(25)}
        cands[0] = refs[0][0].upper()  # one exact match, written differently
        gts = {i: [" ".join(tokenize(r)) for r in rs] for i, rs in refs.items()}
        res = {i: [" ".join(tokenize(c))] for i, c in cands.items()}
        expected_bleu = bleu.Bleu(4).compute_score(gts, res, verbose=0)[0][3]
        expected_cider = cider.Cider().compute_score(gts, res)[0]
        assert bleu4(cands, refs) == pytest.approx(expected_bleu, rel=1e-12, abs=1e-15)
        assert cider_d(cands, refs) == pytest.approx(expected_cider, rel=1e-12)
