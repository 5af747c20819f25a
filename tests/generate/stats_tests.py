"""Goodness-of-fit tests with torch only: chi-square (p-value through the regularised upper
incomplete gamma function) and total variation with a concentration bound."""

from __future__ import annotations

import math

import torch


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int, float]:
    """Pearson's test of observed counts against probabilities, pooling cells whose expected
    count is below 5 into one. Returns (statistic, degrees of freedom, p-value)."""
    counts, probs = counts.double().flatten(), probs.double().flatten()
    n = counts.sum()
    expected = probs * n
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum().reshape(1)])
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = exp > 0
    if (obs[~keep] > 0).any():  # something the distribution gives probability 0
        return math.inf, int(keep.sum()) - 1, 0.0
    obs, exp = obs[keep], exp[keep]
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = int(obs.numel()) - 1
    if df == 0:  # a single possible outcome
        return stat, 0, 1.0 if stat == 0 else 0.0
    p = float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                      torch.tensor(stat / 2, dtype=torch.float64)))
    return stat, df, p


def total_variation(counts: torch.Tensor, probs: torch.Tensor) -> float:
    counts, probs = counts.double().flatten(), probs.double().flatten()
    return 0.5 * float((counts / counts.sum() - probs).abs().sum())


def tv_threshold(probs: torch.Tensor, n: int, failure: float = 1e-6) -> float:
    """A TV that n exact samples exceed with probability below ``failure``.

    E[TV] <= 1/2 sum sqrt(p(1-p)/n) (Jensen), and TV moves by at most 1/n per sample, so by
    McDiarmid P(TV > E[TV] + t) <= exp(-2 n t^2)."""
    probs = probs.double().flatten()
    mean_bound = 0.5 * float((probs * (1 - probs) / n).sqrt().sum())
    return mean_bound + math.sqrt(math.log(1 / failure) / (2 * n))
