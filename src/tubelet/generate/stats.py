"""What a generation returns, and the statistics of speculative sampling."""

from __future__ import annotations

from dataclasses import dataclass, field


def expected_tokens_per_step(acceptance: float, k: int) -> float:
    """(1 - a^(K+1)) / (1 - a): tokens per target call when each draft token is accepted with
    probability a independently (Leviathan et al. 2023, eq. 1)."""
    if acceptance >= 1.0:
        return k + 1.0
    return (1.0 - acceptance ** (k + 1)) / (1.0 - acceptance)


@dataclass
class Stats:
    """Counts over the steps of a generation; rows that have finished are not counted.

    Two acceptance rates: ``acceptance_rate`` is per *tested* draft token (the accepted ones and
    the first rejected one of a step; the tokens after a rejection are never tested): the a of
    :func:`expected_tokens_per_step`. ``accepted_per_drafted`` is per *drafted* token (every
    proposal, tested or not): the share of the draft's work that was kept.
    """

    k: int
    rows: int
    target_calls: int = 0  # batched model calls of the target (a step = one call)
    draft_calls: int = 0
    row_steps: int = 0  # (row, step) pairs
    drafted: int = 0  # draft tokens proposed (up to K per row and step)
    tested: int = 0  # draft tokens that reached the acceptance test
    accepted: int = 0
    generated: int = 0  # tokens emitted, before truncation to max_new_tokens
    accepted_histogram: list[int] = field(default_factory=list)  # steps with 0..K accepted
    drafted_histogram: list[int] = field(default_factory=list)  # steps with 0..K drafted (dynamic length, n-grams)
    alternatives: int = 0  # alternatives proposed (tree verification)
    alternatives_accepted: int = 0  # steps that took an alternative where the chain was rejected

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.tested if self.tested else float("nan")

    @property
    def accepted_per_drafted(self) -> float:
        return self.accepted / self.drafted if self.drafted else float("nan")

    @property
    def tokens_per_step(self) -> float:
        return self.generated / self.row_steps if self.row_steps else float("nan")

    @property
    def expected_tokens_per_step(self) -> float:
        """:func:`expected_tokens_per_step` at the measured acceptance, averaged over the draft
        lengths the steps had (a step that drafted d tokens expects (1 - a^(d+1)) / (1 - a)):
        with a dynamic length or prompt lookup a step often drafts fewer than K."""
        a, steps = self.acceptance_rate, sum(self.drafted_histogram)
        if not steps:
            return expected_tokens_per_step(a, self.k)
        return sum(n * expected_tokens_per_step(a, d) for d, n in enumerate(self.drafted_histogram)) / steps

    @property
    def target_calls_per_token(self) -> float:
        """Target calls per generated token of one row."""
        return self.target_calls * self.rows / self.generated if self.generated else float("nan")

    def summary(self) -> dict:
        out = {"k": self.k, "rows": self.rows, "target_calls": self.target_calls,
               "generated": self.generated, "tokens_per_step": self.tokens_per_step,
               "target_calls_per_token": self.target_calls_per_token}
        if self.k:
            out.update(acceptance_rate=self.acceptance_rate,
                       accepted_per_drafted=self.accepted_per_drafted, drafted=self.drafted,
                       tested=self.tested, accepted=self.accepted, draft_calls=self.draft_calls,
                       expected_tokens_per_step=self.expected_tokens_per_step,
                       accepted_histogram=self.accepted_histogram)
            if self.alternatives:
                out.update(alternatives=self.alternatives, alternatives_accepted=self.alternatives_accepted)
        return out


@dataclass
class Generation:
    tokens: list[list[int]]  # new tokens of each row
    stats: Stats
