"""Two-run routing agreement (moechat.agreement) against values derived by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from moechat.routing import metrics as routing
from moechat.routing.agreement import cohen_kappa, compare, logit_margin, masked_correlation


def probs_of(p1: list[float]) -> np.ndarray:
    """One layer, 2 experts: [T] values of p(expert 1) -> probs [T, 1, 2]."""
    p = np.asarray(p1, dtype=np.float64)[:, None]
    return np.stack([1 - p, p], axis=-1).astype(np.float32)


# Run a picks experts 0 0 1 1, run b picks 0 1 1 1.
A = probs_of([0.1, 0.4, 0.7, 0.8])
B = probs_of([0.3, 0.6, 0.9, 0.8])


def test_hand_built_disagreement():
    agreement = compare(A, B)
    # p_o = 3/4; F_a = (1/2, 1/2), F_b = (1/4, 3/4): p_e = 1/8 + 3/8 = 1/2; kappa = (3/4 - 1/2) / (1 - 1/2) = 1/2
    assert agreement.top1 == pytest.approx([0.75])
    assert agreement.kappa == pytest.approx([0.5])
    # |dp| per token is 0.2, 0.2, 0.2, 0 on both experts -> 0.15
    assert agreement.mean_abs_dp == pytest.approx([0.15], abs=1e-6)
    # margins log(p1/p0): a = ln(1/9), ln(4/6), ln(7/3), ln 4; b = ln(3/7), ln(6/4), ln 9, ln 4
    m_a = np.log([1 / 9, 4 / 6, 7 / 3, 4])
    m_b = np.log([3 / 7, 6 / 4, 9, 4])
    assert agreement.margin_corr == pytest.approx([np.corrcoef(m_a, m_b)[0, 1]], abs=1e-5)
    assert agreement.n_tokens.tolist() == [4]


def test_identical_runs_agree_fully():
    agreement = compare(A, A)
    assert agreement.top1.tolist() == [1.0] and agreement.kappa.tolist() == [1.0]
    assert agreement.mean_abs_dp.tolist() == [0.0]
    assert agreement.margin_corr == pytest.approx([1.0])


@pytest.mark.parametrize(
    ("c_a", "c_b", "kappa"),
    [
        ([0, 1], [1, 0], -1.0),  # p_o = 0, p_e = 1/2
        ([0, 0, 0, 0], [0, 0, 0, 0], 1.0),  # collapsed router, p_e = 1: taken as 1
        ([0, 0, 1, 1], [0, 0, 0, 0], 0.0),  # p_o = 1/2, p_e = 1/2
        # 3 experts: p_o = 2/3, F_a = (1/3, 1/3, 1/3), F_b = (1/3, 2/3, 0): p_e = 1/3; kappa = (1/3) / (2/3)
        ([0, 1, 2], [0, 1, 1], 0.5),
        ([-1, 0, 1], [-1, 0, 1], 1.0),  # missing positions are not counted
    ],
)
def test_cohen_kappa(c_a, c_b, kappa):
    got = cohen_kappa(np.array(c_a)[:, None], np.array(c_b)[:, None], 3)
    assert got == pytest.approx([kappa])


def test_margins_from_logits_and_probs_agree():
    logits = np.array([[[0.5, 2.0, -1.0]], [[3.0, 0.0, 1.0]]])
    probs = routing.softmax(logits)
    # 3 experts: top-1 minus top-2 logit: 2.0 - 0.5, 3.0 - 1.0
    assert logit_margin(logits, logits=True)[:, 0] == pytest.approx([1.5, 2.0])
    assert logit_margin(probs)[:, 0] == pytest.approx([1.5, 2.0], abs=1e-5)
    # 2 experts: z1 - z0, signed
    assert logit_margin(np.array([[[1.0, -0.5]]]), logits=True).tolist() == [[-1.5]]
    assert np.isfinite(logit_margin(probs_of([0.0, 1.0]))).all()  # p = 0 (float16 underflow) stays finite
    assert np.isnan(logit_margin(np.ones((3, 2, 1)))).all()  # one expert: no margin


def test_compare_uses_logits_when_given():
    logits_a = np.log(A.astype(np.float64))
    logits_b = np.log(B.astype(np.float64))
    with_logits = compare(A, B, logits_a=logits_a, logits_b=logits_b)
    assert with_logits.margin_corr == pytest.approx(compare(A, B).margin_corr, abs=1e-5)


def test_missing_positions_in_either_run_are_skipped():
    b = B.copy()
    b[1] = math.nan  # the only token on which the runs disagree
    agreement = compare(A, b)
    assert agreement.n_tokens.tolist() == [3]
    assert agreement.top1.tolist() == [1.0] and agreement.kappa.tolist() == [1.0]
    assert agreement.mean_abs_dp == pytest.approx([0.4 / 3], abs=1e-6)  # 0.2, 0.2, 0


def test_experts_override_argmax():
    tie = probs_of([0.5, 0.5])
    experts_b = np.array([[[1, 0]], [[1, 0]]])
    assert compare(tie, tie).top1.tolist() == [1.0]
    assert compare(tie, tie, experts_b=experts_b).top1.tolist() == [0.0]


@pytest.mark.filterwarnings("error")
def test_empty_and_mismatched():
    empty = np.zeros((0, 2, 2), np.float32)
    agreement = compare(empty, empty)
    assert np.isnan(agreement.top1).all() and agreement.n_tokens.tolist() == [0, 0]
    assert math.isnan(agreement.means()["kappa"])
    with pytest.raises(ValueError, match="shape"):
        compare(A, np.zeros((4, 2, 2), np.float32))


def test_to_dict_is_json():
    report = compare(A, B).to_dict()
    assert report["per_layer"]["kappa"] == [0.5]
    assert report["mean"]["top1"] == 0.75
    assert json.loads(json.dumps(compare(A[:1], B[:1]).to_dict()))["per_layer"]["margin_corr"] == [None]


def test_masked_correlation_needs_spread():
    x = np.array([[1.0], [1.0], [1.0]])
    assert np.isnan(masked_correlation(x, x, np.ones_like(x, bool))).all()
    y = np.array([[1.0], [2.0], [9.0]])
    ok = np.array([[True], [True], [False]])
    assert masked_correlation(y, -y, ok) == pytest.approx([-1.0])


@st.composite
def routed(draw) -> np.ndarray:
    shape = draw(st.tuples(st.integers(1, 10), st.integers(1, 3), st.integers(1, 4)))
    probs = routing.softmax(draw(arrays(np.float64, shape, elements=st.floats(-20, 20))))
    probs[draw(arrays(np.bool_, shape[:2]))] = math.nan
    return probs


@settings(max_examples=60, deadline=None)
@given(routed())
def test_agreement_with_itself_is_one(probs):
    agreement = compare(probs, probs)
    has = agreement.n_tokens > 0
    assert (agreement.top1[has] == 1.0).all() and (agreement.kappa[has] == 1.0).all()
    assert (agreement.mean_abs_dp[has] == 0.0).all()
    corr = agreement.margin_corr
    assert corr[~np.isnan(corr)] == pytest.approx(np.ones((~np.isnan(corr)).sum()))


@settings(max_examples=60, deadline=None)
@given(routed(), st.randoms(use_true_random=False))
def test_kappa_is_at_most_one_and_symmetric(probs, rnd):
    other = probs[rnd.sample(range(len(probs)), len(probs))]  # a shuffled run
    ab, ba = compare(probs, other), compare(other, probs)
    assert np.allclose(ab.kappa, ba.kappa, equal_nan=True) and np.allclose(ab.top1, ba.top1, equal_nan=True)
    assert (ab.kappa[~np.isnan(ab.kappa)] <= 1.0 + 1e-12).all()
