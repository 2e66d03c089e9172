"""Which case an annotator takes next: the strategies ``Next case`` offers (MONAI Label calls them
active-learning strategies). Every strategy picks among the cases with no final label yet.

- ``first``: the project's order (as the cases were added).
- ``random``: a random one (``seed`` makes it repeatable).
- ``least-confident``: the case the model is least sure of first: the cases the model has scored
  (its mean slice confidence, kept when a session on the case is saved with that model) by
  rising confidence, then those it has not scored, in the project's order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from medsam2.errors import UsageError
from medsam2.project.models import active_model_name
from medsam2.project.store import ProjectStore
from medsam2.project.vocabulary import STRATEGIES


@dataclass(frozen=True)
class NextCase:
    """The case to annotate next (None when every case is final), with the score it was chosen by."""

    case_id: str | None
    strategy: str
    remaining: int
    confidence: float | None = None


def next_case(store: ProjectStore, strategy: str, seed: int | None = None, skip: frozenset[str] = frozenset()) -> NextCase:
    """The next case to annotate by ``strategy``, among the cases with no final label and not in ``skip``.

    Raises:
        UsageError: an unknown strategy.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    final = store.final_cases()
    open_cases = [c.case_id for c in store.cases() if c.case_id not in final and c.case_id not in skip]
    if not open_cases:
        return NextCase(None, strategy, 0)
    if strategy == "first":
        return NextCase(open_cases[0], strategy, len(open_cases))
    if strategy == "random":
        return NextCase(random.Random(seed).choice(open_cases), strategy, len(open_cases))
    scores = store.scores(active_model_name(store))
    order = {case_id: index for index, case_id in enumerate(open_cases)}
    chosen = min(open_cases, key=lambda c: (c not in scores, scores.get(c, 0.0), order[c]))
    return NextCase(chosen, strategy, len(open_cases), scores.get(chosen))
