"""xtc.metrics: parity with scikit-learn/scipy, per-task keys, selection, and the GLUE average conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from xtc.tasks import TASKS
from xtc.metrics import (
    METRICS,
    XTC_GLUE_TASKS,
    accuracy,
    compute_metrics,
    describe_glue_average,
    f1,
    glue_average,
    mcc,
    pearson,
    selection_score,
    spearman,
)

binary_pairs = st.integers(1, 60).flatmap(
    lambda n: st.tuples(st.lists(st.integers(0, 1), min_size=n, max_size=n),
                        st.lists(st.integers(0, 1), min_size=n, max_size=n))
)
score_pairs = st.integers(3, 60).flatmap(
    lambda n: st.tuples(st.lists(st.floats(0, 5, allow_nan=False), min_size=n, max_size=n, unique=True),
                        st.lists(st.floats(0, 5, allow_nan=False), min_size=n, max_size=n, unique=True))
)


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
@settings(max_examples=60, deadline=None)
@given(binary_pairs)
def test_classification_metrics_equal_sklearn(pair):
    predictions, labels = pair
    assert accuracy(predictions, labels) == accuracy_score(labels, predictions)
    assert f1(predictions, labels) == f1_score(labels, predictions, zero_division=0.0)
    assert mcc(predictions, labels) == matthews_corrcoef(labels, predictions)


@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60).flatmap(lambda n: st.tuples(st.lists(st.integers(0, 3), min_size=n, max_size=n),
                                                      st.lists(st.integers(0, 3), min_size=n, max_size=n))))
def test_multiclass_mcc_and_accuracy_equal_sklearn(pair):
    predictions, labels = pair
    assert accuracy(predictions, labels) == accuracy_score(labels, predictions)
    assert mcc(predictions, labels) == matthews_corrcoef(labels, predictions)


def test_importing_the_metrics_leaves_scikit_learn_and_pandas_out():
    """Every training and evaluation job imports xtc.metrics: scikit-learn (and the pandas it imports) would add
    ~0.5 s to each (docs/performance.md, "Rehearsals")."""
    import subprocess
    import sys

    code = "import sys, xtc.metrics; print(sorted(m for m in ('sklearn', 'pandas') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


@settings(max_examples=60, deadline=None)
@given(score_pairs)
def test_correlations_equal_scipy(pair):
    predictions, labels = pair
    assert pearson(predictions, labels) == stats.pearsonr(predictions, labels)[0]
    assert spearman(predictions, labels) == stats.spearmanr(predictions, labels)[0]


def test_pinned_values():
    # TP=1, FP=1, TN=2, FN=0: acc 3/4, F1 2/3, MCC (1*2 - 1*0) / sqrt(2*1*3*2)
    assert accuracy([1, 1, 0, 0], [1, 0, 0, 0]) == 0.75
    assert f1([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(2 / 3, abs=0, rel=1e-15)
    assert mcc([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(2 / math.sqrt(12), rel=1e-15)
    assert pearson([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert spearman([1.0, 2.0, 3.0], [3.0, 20.0, 100.0]) == 1.0
    assert mcc([1, 1, 1], [0, 1, 0]) == 0.0  # constant predictions


def test_every_task_metric_exists():
    assert {m for spec in TASKS.values() for m in spec.metrics} <= set(METRICS)


# ---------------------------------------------------------------------------------------------- compute_metrics
def test_keys_per_task():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    assert compute_metrics("mrpc", labels, labels) == {"accuracy": 1.0, "f1": 1.0}
    assert set(compute_metrics("qqp", 1 - labels, labels)) == {"accuracy", "f1"}
    assert compute_metrics("cola", labels, labels) == {"mcc": 1.0}
    assert compute_metrics("rte", labels, labels, split="validation") == {"accuracy": 1.0}
    scores = rng.uniform(0, 5, 50)
    assert compute_metrics("stsb", scores, scores) == pytest.approx({"pearson": 1.0, "spearman": 1.0})
    mnli = rng.integers(0, 3, 30)
    assert compute_metrics("mnli", mnli, mnli, split="validation_matched") == {"mnli_m/accuracy": 1.0}
    assert compute_metrics("mnli", mnli, mnli, split="validation_mismatched") == {"mnli_mm/accuracy": 1.0}


def test_logits_are_argmaxed_and_regression_columns_squeezed():
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0], [1.0, 0.5, 0.0]])
    labels = np.array([1, 0, 2, 2])
    assert compute_metrics("mnli", logits, labels, split="validation_matched") == {"mnli_m/accuracy": 0.75}
    scores = np.array([[0.5], [2.5], [4.0]])
    assert compute_metrics("stsb", scores, [1.0, 2.0, 5.0])["spearman"] == 1.0
    assert compute_metrics("sst2", np.array([1.0, 0.0]), [1, 1]) == {"accuracy": 0.5}  # float class ids


def test_bad_predictions_are_reported():
    with pytest.raises(ValueError, match=r"'mnli' has 2 eval splits"):
        compute_metrics("mnli", [0, 1], [0, 1])
    with pytest.raises(ValueError, match=r"3 predictions but 2 labels for rte/validation"):
        compute_metrics("rte", [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match=r"logits of shape \(2, 3\) for rte, which has 2 labels"):
        compute_metrics("rte", np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match=r"must be class ids, got non-integer values such as \[0\.7\]"):
        compute_metrics("rte", [0.7, 1.0], [0, 1])
    with pytest.raises(ValueError, match=r"shape \(N,\) or \(N, 1\), got \(2, 2\)"):
        compute_metrics("stsb", np.zeros((2, 2)), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"non-empty 1-D"):
        compute_metrics("rte", [], [])
    with pytest.raises(ValueError, match=r"unknown task 'mnli_m'; did you mean 'mnli'\?"):
        compute_metrics("mnli_m", [0], [0])


# ---------------------------------------------------------------------------------------------- selection
def test_selection_score():
    assert selection_score("cola", {"mcc": 0.5}) == 0.5
    assert selection_score("mnli", {"mnli_m/accuracy": 0.8, "mnli_mm/accuracy": 0.9}) == 0.8
    assert selection_score("stsb", {"pearson": 0.7, "spearman": 0.9}) == 0.7
    with pytest.raises(ValueError, match=r"lack its selection metric 'mnli_m/accuracy'; found \['mnli_mm/accuracy'\]"):
        selection_score("mnli", {"mnli_mm/accuracy": 0.9})


# ---------------------------------------------------------------------------------------------- GLUE average
# BERT-base FP row of the BinaryBERT/BiT tables (docs/method.md, "Numbers to compare against"), as fractions; QQP/MRPC F1 and STS-B
# Spearman are made-up fillers for the sub-metric convention.
PAPER_ROW = {
    "mnli": {"mnli_m/accuracy": 0.849, "mnli_mm/accuracy": 0.855},
    "qqp": {"accuracy": 0.914, "f1": 0.884},
    "qnli": {"accuracy": 0.921},
    "sst2": {"accuracy": 0.932},
    "cola": {"mcc": 0.597},
    "stsb": {"pearson": 0.901, "spearman": 0.897},
    "mrpc": {"accuracy": 0.863, "f1": 0.903},
    "rte": {"accuracy": 0.722},
}


def test_xtc_average_is_the_selection_metric_over_eight_tasks():
    expected = (0.849 + 0.914 + 0.921 + 0.932 + 0.597 + 0.901 + 0.863 + 0.722) / 8
    assert glue_average(PAPER_ROW) == pytest.approx(expected, abs=1e-12)
    assert XTC_GLUE_TASKS == ("mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte")
    with_wnli = PAPER_ROW | {"wnli": {"accuracy": 0.0}}
    assert glue_average(with_wnli) == glue_average(PAPER_ROW)  # WNLI excluded


def test_other_conventions():
    columns = glue_average(PAPER_ROW, per_task="split_columns")
    assert columns == pytest.approx(7.554 / 9, abs=1e-12)  # the tables' 83.9: MNLI-m and -mm as two columns
    assert round(100 * columns, 1) == 83.9
    means = [0.852, 0.899, 0.921, 0.932, 0.597, 0.899, 0.883, 0.722]
    assert glue_average(PAPER_ROW, per_task="submetric_mean") == pytest.approx(np.mean(means), abs=1e-12)
    assert glue_average({"rte": {"accuracy": 0.5}, "wnli": {"accuracy": 0.7}}, tasks=["rte", "wnli"]) == 0.6


def test_average_errors():
    partial = {name: scores for name, scores in PAPER_ROW.items() if name != "rte"}
    with pytest.raises(ValueError, match=r"is missing \['rte'\] .*pass tasks=\.\.\. to average fewer"):
        glue_average(partial)
    with pytest.raises(ValueError, match=r"mnli lack \['mnli_mm/accuracy'\] needed by per_task='split_columns'"):
        glue_average(PAPER_ROW | {"mnli": {"mnli_m/accuracy": 0.8}}, per_task="split_columns")
    with pytest.raises(ValueError, match=r"per_task='glue' is not a GLUE average convention"):
        glue_average(PAPER_ROW, per_task="glue")


def test_convention_is_stated():
    text = describe_glue_average()
    assert text.startswith("GLUE average: plain mean over 8 tasks (WNLI excluded) of one number per task, its")
    assert "MNLI mnli_m/accuracy; QQP accuracy;" in text and "CoLA mcc; STS-B pearson" in text
    assert "MNLI mean(mnli_m/accuracy, mnli_mm/accuracy)" in describe_glue_average("submetric_mean")
