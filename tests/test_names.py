"""Plain names: the product's lists say which rules they have on, baselines go by their usual names."""

from __future__ import annotations

from shoprec.evaluation.names import display_names, served_model


def test_rule_steps_read_as_the_rules_they_have_on_so_far() -> None:
    models = [
        "shoprec 0 (ranker, no rules)",
        "shoprec 1 + out_of_stock",
        "shoprec 2 + already_bought",
        "shoprec 3 + price_affinity",
        "shoprec torch head + price_affinity",
        "als",
        "sasrec",
        "my_model",
    ]
    names = display_names(models, "shoprec")
    assert names["shoprec 0 (ranker, no rules)"] == "served lists: ranker, no rules"
    assert names["shoprec 1 + out_of_stock"] == "served lists: ranker + stock rule"
    assert names["shoprec 3 + price_affinity"] == "served lists: ranker + stock + bought + price rules"
    assert names["shoprec torch head + price_affinity"] == (
        "served lists, torch head: ranker + stock + bought + price rules"
    )
    assert (names["als"], names["sasrec"], names["my_model"]) == ("ALS", "SASRec", "my_model")
    assert len(set(names.values())) == len(models)  # no two models share a name
    assert served_model(models, "shoprec") == "shoprec 3 + price_affinity"
    assert served_model(["als"], "shoprec") is None


def test_steps_sort_by_number_not_by_text() -> None:
    models = [f"shop {i} + promotion" if i else "shop 0 (ranker, no rules)" for i in range(12)]
    assert served_model(models, "shop") == "shop 11 + promotion"
    assert (
        display_names(models, "shop")["shop 2 + promotion"]
        == "served lists: ranker + promotion + promotion rules"
    )
