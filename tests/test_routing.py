"""Routing metrics (moechat.routing, moechat.paths, moechat.summary) against values derived by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from moechat.routing import metrics as routing
from moechat.routing.paths import cross_layer_agreement, routing_paths
from moechat.routing.summary import badge, short_name, short_names, summarize

NAN = math.nan


def h2(p: float) -> float:
    """Binary entropy in bits = entropy normalised by ln 2 for 2 experts."""
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


# The 3-token, 2-layer, 2-expert case. p1 = p(expert 1):
#           layer 0   layer 1
#   t0       0.2       0.7        first choices  layer 0: 0 1 0
#   t1       0.6       0.8                       layer 1: 1 1 0
#   t2       0.1       0.4
P1 = np.array([[0.2, 0.7], [0.6, 0.8], [0.1, 0.4]])
PROBS = np.stack([1 - P1, P1], axis=-1).astype(np.float32)  # [3, 2, 2]


def probs_of(p1: list[list[float]]) -> np.ndarray:
    p = np.asarray(p1, dtype=np.float64)
    return np.stack([1 - p, p], axis=-1).astype(np.float32)


CASES = [
    # metric, expected per layer, hand derivation
    # W[l,1]: layer 0 (0.2+0.6+0.1)/3 = 0.3; layer 1 (0.7+0.8+0.4)/3 = 1.9/3
    (lambda p: routing.soft_share(p)[:, 1], [0.3, 1.9 / 3]),
    (lambda p: routing.soft_share(p)[:, 0], [0.7, 1.1 / 3]),
    # F[l,1]: layer 0 one of three tokens picks expert 1; layer 1 two of three
    (lambda p: routing.first_choice_share(p)[:, 1], [1 / 3, 2 / 3]),
    # d = 2F1 - 1
    (routing.dominance, [-1 / 3, 1 / 3]),
    # mean normalised entropy: layer 0 (h(.2)+h(.6)+h(.1))/3 = (0.7219+0.9710+0.4690)/3 = 0.7206
    (routing.layer_entropy, [(h2(0.2) + h2(0.6) + h2(0.1)) / 3, (h2(0.7) + h2(0.8) + h2(0.4)) / 3]),
    # I = h(W1) - mean H: layer 0 0.8813 - 0.7206 = 0.1607; layer 1 h(0.6333) - 0.8581 = 0.9487 - 0.8581 = 0.0906
    (
        routing.mutual_information,
        [h2(0.3) - (h2(0.2) + h2(0.6) + h2(0.1)) / 3, h2(1.9 / 3) - (h2(0.7) + h2(0.8) + h2(0.4)) / 3],
    ),
    # R1: layer 0 pairs (0,1) (1,0) -> 0/2; layer 1 pairs (1,1) (1,0) -> 1/2
    (routing.repeat_rate, [0.0, 0.5]),
    # baseline sum F^2 = (1/3)^2 + (2/3)^2 = 5/9 at both layers
    (routing.repeat_baseline, [5 / 9, 5 / 9]),
    # message boundary between t1 and t2: only the pair (t0, t1) counts: layer 0 differs, layer 1 agrees
    (lambda p: routing.repeat_rate(p, segments=np.array([0, 0, 1])), [0.0, 1.0]),
]


@pytest.mark.parametrize(("metric", "expected"), CASES)
def test_hand_derived_case(metric, expected):
    assert metric(PROBS) == pytest.approx(expected, abs=1e-6)


def test_token_entropy_and_first_choice():
    assert routing.first_choice(PROBS).tolist() == [[0, 1], [1, 1], [0, 0]]
    assert routing.entropy(PROBS)[0].tolist() == pytest.approx([h2(0.2), h2(0.7)], abs=1e-6)
    assert routing.entropy(np.full((1, 4), 0.25)) == pytest.approx([1.0])
    assert routing.entropy(np.array([[1.0, 0.0, 0.0]])) == pytest.approx([0.0])


def test_mixtral_repeat_rate_never_pairs_across_messages():
    # one layer, two messages: first choices [0 0 1 | 1 1]
    p = probs_of([[0.1], [0.2], [0.9], [0.8], [0.7]])
    # all 4 pairs: (0,0) (0,1) (1,1)* (1,1) -> 3/4, but * straddles the boundary: 2 of the 3 remaining pairs agree
    assert routing.repeat_rate(p) == pytest.approx([3 / 4])
    assert routing.repeat_rate(p, segments=routing.segment_ids([3, 2])) == pytest.approx([2 / 3])
    # baseline: F = (2/5, 3/5) -> 4/25 + 9/25
    assert routing.repeat_baseline(p) == pytest.approx([13 / 25])
    # one-token messages have no pair at all
    assert np.isnan(routing.repeat_rate(p, segments=np.arange(5))).all()
    with pytest.raises(ValueError, match="segments"):
        routing.repeat_rate(p, segments=np.array([0, 1]))


def test_segment_ids():
    assert routing.segment_ids([2, 0, 3]).tolist() == [0, 0, 2, 2, 2]
    assert routing.segment_ids([]).tolist() == []


def test_mi_is_zero_when_every_token_gets_the_same_split():
    p = probs_of([[0.3, 0.9]] * 6)
    assert routing.mutual_information(p) == pytest.approx([0.0, 0.0], abs=1e-9)
    assert routing.layer_entropy(p) == pytest.approx([h2(0.3), h2(0.9)], abs=1e-6)


def test_mi_is_one_for_confident_balanced_routing():
    p = probs_of([[0.0], [1.0], [0.0], [1.0]])
    assert routing.mutual_information(p) == pytest.approx([1.0])


def test_experts_array_overrides_argmax():
    # a 50/50 tie: argmax says expert 0, llama.cpp's top-k said expert 1
    p = probs_of([[0.5], [0.5]])
    experts = np.array([[[1, 0]], [[1, 0]]])
    assert routing.first_choice_share(p).tolist() == [[1.0, 0.0]]
    assert routing.first_choice_share(p, experts).tolist() == [[0.0, 1.0]]
    assert routing.dominance(p, experts) == pytest.approx([1.0])


def test_negative_expert_id_is_missing():
    # the engine marks an unobserved layer with NaN probabilities and expert id -1
    experts = np.array([[[0, 1], [1, 0]], [[1, 0], [-1, -1]], [[0, 1], [0, 1]]])
    assert routing.first_choice(PROBS, experts).tolist() == [[0, 1], [1, -1], [0, 0]]


def test_stack():
    records = [routing.Routing(PROBS[t], routing.top_k(PROBS[t], 1)) for t in range(3)]
    probs, experts = routing.stack(records)
    assert probs.dtype == np.float32 and experts.dtype == np.int32
    np.testing.assert_array_equal(probs, PROBS)
    assert experts[..., 0].tolist() == routing.first_choice(PROBS).tolist()
    empty_probs, empty_experts = routing.stack([], n_layers=2, n_experts=4, k=2)
    assert empty_probs.shape == (0, 2, 4) and empty_experts.shape == (0, 2, 2)


def test_dominance_needs_two_experts():
    with pytest.raises(ValueError, match="2 experts"):
        routing.dominance(np.full((1, 1, 3), 1 / 3))


def test_missing_positions_are_ignored():
    # the last layer of t2 was not captured (a prompt token): layer 1 only sees t0 and t1
    p = PROBS.copy()
    p[2, 1] = NAN
    assert routing.valid(p).tolist() == [[True, True], [True, True], [True, False]]
    assert routing.soft_share(p)[:, 1] == pytest.approx([0.3, 0.75])
    assert routing.first_choice(p)[2].tolist() == [0, -1]
    assert routing.first_choice_share(p)[1].tolist() == [0.0, 1.0]
    assert routing.repeat_rate(p) == pytest.approx([0.0, 1.0])  # layer 1: only (t0, t1), both expert 1
    assert routing.layer_entropy(p)[1] == pytest.approx((h2(0.7) + h2(0.8)) / 2, abs=1e-6)
    assert routing_paths(p).n_tokens == 2


@pytest.mark.filterwarnings("error")
def test_no_tokens_gives_nan_without_warnings():
    empty = np.zeros((0, 3, 2), np.float32)
    for metric in (routing.layer_entropy, routing.mutual_information, routing.repeat_rate, routing.dominance):
        assert metric(empty).shape == (3,) and np.isnan(metric(empty)).all()
    assert np.isnan(routing.soft_share(empty)).all() and routing.soft_share(empty).shape == (3, 2)
    assert np.isnan(cross_layer_agreement(empty)).all()
    assert routing_paths(empty).paths == ()
    summary = summarize(empty, ["a", "b"])
    assert summary.n_tokens == 0 and summary.badge == "" and math.isnan(summary.entropy)


def test_cross_layer_agreement():
    # first choices per token: layer 0 (0 1 0), layer 1 (1 1 0): they agree on t1, t2
    assert cross_layer_agreement(PROBS) == pytest.approx(np.array([[1, 2 / 3], [2 / 3, 1]]))


def test_routing_paths():
    paths = routing_paths(PROBS)  # "01", "11", "00": three distinct paths, one token each
    assert sorted(paths.paths) == ["00", "01", "11"] and paths.counts == (1, 1, 1)
    assert paths.entropy_bits == pytest.approx(math.log2(3))
    same = routing_paths(probs_of([[0.9, 0.1, 0.8]] * 4))
    assert same.paths == ("101",) and same.counts == (4,) and same.entropy_bits == 0.0
    # 3 tokens "10", 1 token "01": H = -(3/4 log2 3/4 + 1/4 log2 1/4) = 0.8113
    mixed = routing_paths(probs_of([[0.9, 0.1]] * 3 + [[0.1, 0.9]]))
    assert mixed.paths == ("10", "01") and mixed.counts == (3, 1)
    assert mixed.entropy_bits == pytest.approx(0.8112781)


def test_routing_paths_many_experts():
    p = np.zeros((2, 2, 40), np.float32)
    p[:, 0, 37] = 1.0
    p[:, 1, 5] = 1.0
    assert routing_paths(p).paths == ("37.5",)
    assert routing_paths(p[..., :36]).paths == ("05",)


def test_summarize_hand_case():
    s = summarize(PROBS, ["Xwin-LM/Xwin-LM-7B-V0.2", "PygmalionAI/pygmalion-2-7b"])
    # soft share of expert 1, mean over layers: (0.3 + 0.6333) / 2 = 0.4667
    assert s.share == pytest.approx(((0.7 + 1.1 / 3) / 2, (0.3 + 1.9 / 3) / 2))
    assert s.badge == "53% Xwin · 47% Pygmalion"
    assert s.n_tokens == 3 and s.layer_share.shape == (2, 2)
    assert s.repeat_rate == pytest.approx(0.25) and s.repeat_baseline == pytest.approx(5 / 9)
    assert s.entropy == pytest.approx(np.mean(routing.layer_entropy(PROBS)))
    with pytest.raises(ValueError, match="expert names"):
        summarize(PROBS, ["only one"])


@pytest.mark.parametrize(
    ("shares", "names", "expected"),
    [
        ([0.39, 0.61], ["Xwin", "Pygmalion"], "61% Pygmalion · 39% Xwin"),
        ([0.605, 0.395], ["A", "B"], "61% A · 39% B"),  # 60.5 + 39.5: the tie goes to the first
        ([1 / 3] * 3, ["A", "B", "C"], "34% A · 33% B · 33% C"),  # adds up to 100
        ([0.1, 0.2, 0.3, 0.4], ["A", "B", "C", "D"], "40% D · 30% C · 20% B"),  # top 3
        ([NAN, NAN], ["A", "B"], ""),
        ([], [], ""),
    ],
)
def test_badge(shares, names, expected):
    assert badge(shares, names) == expected


@pytest.mark.parametrize(
    ("name", "short"),
    [
        ("PygmalionAI/pygmalion-2-7b", "Pygmalion"),
        ("Xwin-LM/Xwin-LM-7B-V0.2", "Xwin"),
        ("expert 0", "Expert 0"),
        ("SmolLM2", "SmolLM2"),
    ],
)
def test_short_name(name, short):
    assert short_name(name) == short


def test_short_names_keep_full_names_on_collision():
    names = ["mistralai/Mistral-7B-v0.1", "org/Mistral-7B-Instruct"]
    assert short_names(names) == tuple(names)


# --- properties --------------------------------------------------------------------------------------------------

shapes = st.tuples(st.integers(1, 12), st.integers(1, 4), st.integers(1, 5))


@st.composite
def routed(draw) -> np.ndarray:
    """probs [T, L, E] from random logits, with some positions missing."""
    shape = draw(shapes)
    logits = draw(arrays(np.float64, shape, elements=st.floats(-20, 20)))
    missing = draw(arrays(np.bool_, shape[:2]))
    probs = routing.softmax(logits)
    probs[missing] = NAN
    return probs


@settings(max_examples=60, deadline=None)
@given(routed())
def test_properties(probs):
    has = routing.valid(probs).any(axis=0)
    for share in (routing.soft_share(probs), routing.first_choice_share(probs)):
        assert share[has].sum(axis=-1) == pytest.approx(np.ones(has.sum()), abs=1e-5)
        assert np.isnan(share[~has]).all()
    h = routing.entropy(probs)
    assert ((h[routing.valid(probs)] >= 0) & (h[routing.valid(probs)] <= 1)).all()
    mi = routing.mutual_information(probs)[has]
    assert ((mi >= 0) & (mi <= 1 + 1e-9)).all()
    r1 = routing.repeat_rate(probs)
    assert ((r1[~np.isnan(r1)] >= 0) & (r1[~np.isnan(r1)] <= 1)).all()
    g = cross_layer_agreement(probs)
    assert np.allclose(g, g.T, equal_nan=True)
    assert np.diag(g)[has] == pytest.approx(np.ones(has.sum()))
    assert sum(routing_paths(probs).counts) == routing.valid(probs).all(axis=1).sum()
