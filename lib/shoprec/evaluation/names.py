"""Plain names for the models the console and the report show.

The metrics table keys the product's own lists by step (``shoprec 2 + already_bought``: the
ranker with the scenario's rules switched on one at a time, in the order they run). A reader should
not need the docs to decode that: the step reads "served lists: ranker + stock + bought rules",
and the baselines go by the names the field uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

BASELINE_NAMES = {
    "popularity": "popularity",
    "category_popularity": "category popularity",
    "recent_popularity": "recent popularity",
    "als": "ALS",
    "encoder": "zero-shot encoder",
    "retriever": "fine-tuned retriever (text two-tower)",
    "sasrec": "SASRec",
    "sequence": "sequence retriever",
}
#: What each business rule is called in a name (the rule names of :mod:`shoprec.serving.rules`).
RULE_WORDS = {
    "out_of_stock": "stock",
    "already_bought": "bought",
    "price_affinity": "price",
    "promotion": "promotion",
    "category_cap": "category cap",
    "mmr": "MMR",
}
TORCH_HEAD = "torch head"


def _step(model: str, lead: str) -> tuple[int, str] | None:
    m = re.fullmatch(rf"{re.escape(lead)} (\d+) (.*)", model)
    return (int(m.group(1)), m.group(2)) if m else None


def _rule(label: str) -> str | None:
    """The rule a step adds (``+ already_bought`` → ``bought``); None for the ranker alone."""
    if not label.startswith("+ "):
        return None
    rule = label.removeprefix("+ ").strip()
    return RULE_WORDS.get(rule, rule.replace("_", " "))


def _with_rules(words: list[str]) -> str:
    if not words:
        return "ranker, no rules"
    return "ranker + " + " + ".join(words) + (" rule" if len(words) == 1 else " rules")


def is_served(model: str, lead: str) -> bool:
    """Whether ``model`` is one of the product's own lists (a rule step or the torch head's)."""
    return model.startswith(f"{lead} ")


def display_names(models: Iterable[str], lead: str) -> dict[str, str]:
    """Every model's plain name: the served lists' steps with the rules they have on so far."""
    models = list(models)
    steps = sorted((s[0], s[1]) for m in models if (s := _step(m, lead)) is not None)
    words: dict[int, list[str]] = {}
    on: list[str] = []
    for i, label in steps:
        rule = _rule(label)
        if rule is not None:
            on = [*on, rule]
        words[i] = on
    names: dict[str, str] = {}
    for m in models:
        step = _step(m, lead)
        if step is not None:
            names[m] = f"served lists: {_with_rules(words[step[0]])}"
        elif m.startswith(f"{lead} {TORCH_HEAD}"):
            # the torch head with every rule of the scenario: the last step's rules
            names[m] = f"served lists, torch head: {_with_rules(words[steps[-1][0]] if steps else [])}"
        else:
            names[m] = BASELINE_NAMES.get(m, m)
    return names


def served_model(models: Iterable[str], lead: str) -> str | None:
    """The lists a shop is served: the last rule step (the scenario with all its rules)."""
    steps = [(s[0], m) for m in models if (s := _step(m, lead)) is not None]
    return max(steps)[1] if steps else None
