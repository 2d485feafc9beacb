"""`make demo`'s summary names the delivered model and its test score beside the single best's."""

from __future__ import annotations

import io

from cerebros_service.demo import print_summary


def _result(**extra) -> dict:
    return {"status": "success", "metric": "val_accuracy", "direction": "max", "best_metric": 0.98,
            "best_architecture": {"levels": [{"units": [{"neurons": 8, "activation": "elu"}]}, {"units": [{}]}]},
            "completed_trials": 30, "failed_trials": 0, "metadata": {"duration_s": 12.0},
            "artifacts": {"run_dir": "runs/x"}, **extra}


def test_the_summary_says_what_the_ensemble_bought():
    out = io.StringIO()
    print_summary(_result(delivered_model="ensemble", test_metric=0.9722,
                          ensemble={"members": [{"trial": 3, "weight": 0.5}, {"trial": 9, "weight": 0.5}],
                                    "single_best": {"test_metric": 0.9611}}), 13.0, out)
    text = out.getvalue()
    assert "an ensemble of 2 trials" in text
    assert "test accuracy     : 0.9722 (the single best: 0.9611)" in text


def test_the_summary_of_a_single_best_run_has_no_ensemble_line():
    out = io.StringIO()
    print_summary(_result(delivered_model="single_best", test_metric=None, ensemble=None), 13.0, out)
    assert "ensemble" not in out.getvalue() and "test " not in out.getvalue()
