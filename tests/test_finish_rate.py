"""Finish rates (the Demon paper's Table 1 form) from the analysis stage's candidate table: pure pandas."""

import math

import pandas as pd
import pytest

from pipeline.analysis.finish_rate import finish_rate, finish_rate_rows, method_label, setting_positions

LENET = ("lenet5", "fashion_mnist")
RESNET = ("resnet20", "cifar10")
SGDM = "momentum"


def candidate(setting, policy, momentum, optimizer, steps=None, good=True, final=0.9, name=None, failed=0):
    model, dataset = setting
    return {"group": f"{model} / {dataset} / {optimizer}", "model": model, "dataset": dataset, "optimizer": optimizer,
            "policy": policy, "momentum": momentum, "name": name or policy, "good": good,
            "steps_mean": steps if good else math.nan, "n_failed": failed, "n_reached": 3 if good else 1,
            "final_val_mean": final, "best_val_mean": final, "rank": 1}


def table(*rows):
    return pd.DataFrame(list(rows))


STUDY = table(
    candidate(LENET, "fix", "demon", SGDM, steps=100),
    candidate(LENET, "fix", "demon", "adam", steps=150),
    candidate(LENET, "step", "none", SGDM, steps=120),
    candidate(LENET, "cos", "none", SGDM, good=False, final=0.7),
    candidate(LENET, "triangle2", "none", SGDM, steps=200),
    candidate(RESNET, "cos", "none", SGDM, steps=80),
    candidate(RESNET, "fix", "demon", SGDM, steps=90),
    candidate(RESNET, "step", "none", SGDM, good=False, final=0.6),
    candidate(RESNET, "triangle2", "none", SGDM, good=False, final=0.5, failed=1),
)


def test_method_is_policy_momentum_and_optimizer():
    assert method_label({"policy": "fix", "momentum": "demon", "optimizer": "adam"}) == "fix+mom:demon (adam)"
    assert method_label({"policy": "step", "momentum": "none", "optimizer": SGDM}) == "step (momentum)"
    assert method_label({"policy": "step", "momentum": math.nan, "optimizer": SGDM}) == "step (momentum)"


def test_positions_rank_every_optimizer_of_a_setting_together_ignoring_the_per_group_rank():
    positions = setting_positions(STUDY)
    lenet = positions[positions["model"] == "lenet5"].set_index("method")["position"].to_dict()
    assert lenet == {"fix+mom:demon (momentum)": 1, "step (momentum)": 2, "fix+mom:demon (adam)": 3,
                     "triangle2 (momentum)": 4, "cos (momentum)": 5}
    resnet = positions[positions["model"] == "resnet20"].set_index("method")["position"].to_dict()
    # Bad ones after good ones: fewer failures first.
    assert resnet == {"cos (momentum)": 1, "fix+mom:demon (momentum)": 2, "step (momentum)": 3,
                      "triangle2 (momentum)": 4}


def test_finish_rate_counts_top1_and_top3_over_the_settings_each_method_ran_in():
    rates = finish_rate(STUDY).set_index("method")
    assert rates.loc["fix+mom:demon (momentum)", ["settings", "top1", "top3"]].tolist() == [2, 1, 2]
    assert rates.loc["fix+mom:demon (momentum)", "top1_share"] == 0.5
    assert rates.loc["fix+mom:demon (momentum)", "top3_share"] == 1.0
    assert rates.loc["cos (momentum)", ["top1_share", "top3_share"]].tolist() == [0.5, 0.5]
    assert rates.loc["fix+mom:demon (adam)", ["settings", "top1", "top3_share"]].tolist() == [1, 0, 1.0]
    assert rates.loc["triangle2 (momentum)", ["top1", "top3"]].tolist() == [0, 0]
    # Best first: Top-1 share, then Top-3 share.
    assert finish_rate(STUDY)["method"].tolist()[:2] == ["fix+mom:demon (momentum)", "cos (momentum)"]


def test_a_method_with_several_candidates_counts_once_at_its_best_place():
    study = table(
        candidate(LENET, "step", "none", SGDM, steps=50, name="step ×2"),
        candidate(LENET, "step", "none", SGDM, steps=60, name="step"),
        candidate(LENET, "cos", "none", SGDM, steps=70),
    )
    positions = setting_positions(study).set_index("method")["position"].to_dict()
    assert positions == {"step (momentum)": 1, "cos (momentum)": 2}
    assert finish_rate(study, top=(1,)).set_index("method")["top1"].to_dict() == {"step (momentum)": 1,
                                                                                  "cos (momentum)": 0}


def test_good_only_gives_no_finish_in_a_setting_where_no_candidate_is_good():
    study = table(candidate(LENET, "step", "none", SGDM, good=False, final=0.8),
                  candidate(LENET, "cos", "none", SGDM, good=False, final=0.7))
    assert finish_rate(study)["top1"].sum() == 1
    assert finish_rate(study, good_only=True)[["top1", "top3"]].sum().tolist() == [0, 0]


def test_budget_can_be_part_of_the_setting():
    study = pd.concat([STUDY.assign(epochs="2"), STUDY.assign(epochs="20")], ignore_index=True)
    rates = finish_rate(study, setting=("model", "dataset", "epochs")).set_index("method")
    assert rates.loc["fix+mom:demon (momentum)", ["settings", "top1"]].tolist() == [4, 2]


def test_missing_columns_and_bad_top_are_named():
    with pytest.raises(ValueError, match=r"lacks the columns \['momentum'\]"):
        finish_rate(STUDY.drop(columns="momentum"))
    with pytest.raises(ValueError, match="top must be"):
        finish_rate(STUDY, top=(0,))


def test_empty_table_gives_an_empty_finish_rate_with_the_columns():
    rates = finish_rate(STUDY.iloc[0:0])
    assert rates.empty and {"method", "settings", "top1_share", "top3_share"} <= set(rates.columns)


def test_rows_print_shares_as_percentages_with_counts():
    header, rows = finish_rate_rows(finish_rate(STUDY))
    assert header == ["Method", "Settings", "Top-1", "Top-3"]
    assert rows[0] == ["fix+mom:demon (momentum)", "2", "50.00% (1)", "100.00% (2)"]
