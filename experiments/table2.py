"""What the two experiments of Table 2 in small (table2_small.py, pair_probe.py) share: the five
models of the paper's Table 2 and what they start from."""

from __future__ import annotations

from tubelet.models.registry import VARIANTS


def table2_classifiers() -> dict[str, str]:
    """Table 2's five models in its order (Models 1-4, the average-pool baseline): kind -> the
    classifier its named models use (Models 3 and 4 have no CLS token, paper 3.3)."""
    return dict(VARIANTS.values())


def add_table2_start_args(p) -> None:
    """``--init`` and ``--time-embed``: what the five models of Table 2 in small start from."""
    p.add_argument("--init", help="start each model from a tubelet checkpoint, with a fresh head for the "
                                  "classes here; '{kind}' is replaced by each model's kind, e.g. "
                                  "runs/table2_small/{kind}_lr0.0003/final (the runs of table2_small.py)")
    p.add_argument("--time-embed", type=float, metavar="STD",
                   help="ViViTConfig.time_embed for every model: a table over time shared by all spatial "
                        "positions (Models 1, 3, 4), drawn from N(0, STD^2), new when a checkpoint has none; "
                        "default: the reference's position table only")
