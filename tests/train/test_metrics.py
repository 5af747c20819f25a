"""Multi-view averaging and the metrics of one and two heads."""

import torch

from tubelet.train.metrics import average_views, classification_metrics, confusion_matrix, topk_correct


def test_views_average_logits_or_probabilities():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 4.0]]])  # one video, two views
    assert torch.equal(average_views(logits, "logits"), torch.tensor([[1.0, 2.0]]))
    probs = average_views(logits, "softmax")
    assert torch.allclose(probs, logits.softmax(-1).mean(1)) and torch.allclose(probs.sum(-1), torch.ones(1))


def test_topk_and_confusion():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = torch.tensor([2, 0, 1])
    assert topk_correct(scores, labels, 1).tolist() == [False, True, False]
    assert topk_correct(scores, labels, 2).tolist() == [True, True, True]
    cm = confusion_matrix(scores.argmax(-1), labels, 3)
    assert cm.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]


def test_two_heads_give_verb_noun_and_action():
    # verbs (2 classes) then nouns (3 classes)
    scores = torch.tensor([[5.0, 0, 0, 5, 0],   # verb 0, noun 1
                           [5.0, 0, 5, 0, 0],   # verb 0, noun 0
                           [0.0, 5, 0, 0, 5]])  # verb 1, noun 2
    labels = torch.tensor([[0, 1], [1, 0], [1, 1]])
    m = classification_metrics(scores, labels, (2, 3), ("verb", "noun"))
    assert m["verb_top1"] == 2 / 3 and m["noun_top1"] == 2 / 3
    assert m["action_top1"] == 1 / 3  # only the first video has both right
    assert m["count"] == 3 and len(m["verb_confusion"]) == 2 and len(m["noun_confusion"]) == 3


def test_reversed_pair_accuracy_compares_a_class_with_its_reversal():
    from tubelet.train.metrics import reversed_pair_accuracy
    scores = torch.tensor([[3.0, 1.0, 9.0], [3.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 2])
    # classes 0 and 1 are reversals of each other; class 2 has none and is not counted
    assert reversed_pair_accuracy(scores, labels, {0: 1, 1: 0}) == 0.5
