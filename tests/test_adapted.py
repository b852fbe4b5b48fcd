"""The adapted strategy (per-chatbot knobs on one shared base) on the project's sample and on constructed lists:
no knobs is the base exactly, the blend and the threshold by hand, pickling, and the tuner's post-hoc fusion of
dev predictions agreeing with what the strategy serves."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from copilot.data.context import Context, Suggestion, contexts_for
from copilot.data.records import Dataset, load_dataset
from copilot.data.splits import split_dataset
from copilot.evaluation.runs import predict
from copilot.evaluation.tuning import knob_predictions
from copilot.strategies import make_strategy
from copilot.strategies.adapted import blended, confidence, fuse, normalised

TFIDF = {"strategy": "tfidf", "params": {}}
BM25 = {"strategy": "bm25", "params": {"neighbours": 10}}


@pytest.fixture(scope="module")
def splits(sample_path: Path) -> dict[str, Dataset]:
    return split_dataset(load_dataset(sample_path), seed=0)


def _contexts(data: Dataset) -> list[Context]:
    return [context for conversation in data.conversations for _, context in contexts_for(conversation)]


def _exact(batch: list[list[Suggestion]]) -> list[list[tuple[str, str | None, float]]]:
    return [[(s.text, s.label, s.score) for s in answer] for answer in batch]


def _rows(frame: Any) -> list[list[Any]]:
    return [[list(v) if isinstance(v, list | tuple) or hasattr(v, "tolist") else v for v in row]
            for row in frame.itertuples(index=False)]


def _adapted(per_chatbot: dict[str, Any] | None = None, depth: int = 5) -> Any:
    return make_strategy("adapted", {"base": TFIDF, "partners": {"bm25": BM25}, "per_chatbot": per_chatbot,
                                     "depth": depth})


def test_a_chatbot_without_knobs_gets_exactly_the_base(splits: dict[str, Dataset]) -> None:
    contexts = _contexts(splits["test"])
    base = make_strategy("tfidf").fit(splits["train"])
    plain = _adapted().fit(splits["train"])
    for k in (3, 5):
        assert _exact(plain.suggest_many(contexts, k)) == _exact(base.suggest_many(contexts, k))
    # knobs on one chatbot leave the others' answers untouched, also when asked for fewer than depth
    adapted = _adapted({"pizza_delivery": {"blend": 0.5, "threshold": 0.3}}).fit(splits["train"])
    others = [c for c in contexts if c.chatbot != "pizza_delivery"]
    assert others and len(others) < len(contexts)
    mixed = dict(zip(map(id, contexts), adapted.suggest_many(contexts, 3), strict=True))
    assert _exact([mixed[id(c)] for c in others]) == _exact(base.suggest_many(others, 3))


def test_the_blend_by_hand() -> None:
    base = [Suggestion("A", 3.0, "a"), Suggestion("B", 1.0, "b")]  # shares 0.75, 0.25
    partner = [Suggestion("B", 2.0, "b"), Suggestion("C", 2.0, "c"), Suggestion("hello!", 4.0)]  # 0.25, 0.25, 0.5
    assert normalised(partner) == [0.25, 0.25, 0.5]
    # w = 0.5: a 0.375, b 0.125 + 0.125 = 0.25, c 0.125, the free text (keyed by its text) 0.25
    fused = fuse(base, partner, blend=0.5, k=5)
    assert [(s.label, s.text, s.score) for s in fused] == [
        ("a", "A", 0.375), ("b", "B", 0.25), (None, "hello!", 0.25), ("c", "C", 0.125)]  # b ties hello: base first
    # w = 0.25, k = 2: a 0.5625, b 0.1875 + 0.0625 = 0.25, then the rest is cut
    assert [(s.label, s.score) for s in fuse(base, partner, blend=0.25, k=2)] == [("a", 0.5625), ("b", 0.25)]
    assert fuse(base, partner, blend=0.0, k=5) == base  # no blend: the base's own suggestions and scores
    assert [s.label for s in fuse(base, [], blend=0.5, k=5)] == ["a", "b"]  # a missing entry counts 0
    assert normalised([Suggestion("x", -1.0, "x"), Suggestion("y", 0.0, "y")]) == [0.5, 0.5]
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        blended(base, partner, 1.5)


def test_the_threshold_hides_a_turn_below_it() -> None:
    base = [Suggestion("A", 3.0, "a"), Suggestion("B", 1.0, "b")]
    partner = [Suggestion("B", 1.0, "b")]
    assert confidence(base) == 0.75 and confidence(base, partner, blend=0.5) == 0.625
    assert fuse(base, threshold=0.8, k=3) == []
    assert fuse(base, threshold=0.75, k=3) == base  # not below: shown
    assert fuse(base, partner, blend=0.5, threshold=0.7, k=3) == []
    assert [s.label for s in fuse(base, partner, blend=0.5, threshold=0.6, k=3)] == ["b", "a"]
    assert fuse([], threshold=0.0, k=3) == []


def test_the_strategy_blends_and_thresholds_what_its_members_answer(splits: dict[str, Dataset]) -> None:
    contexts = [c for c in _contexts(splits["test"]) if c.chatbot == "pizza_delivery"]
    base = make_strategy("tfidf").fit(splits["train"])
    partner = make_strategy("bm25", BM25["params"]).fit(splits["train"])
    blend = _adapted({"pizza_delivery": {"blend": 0.5}}).fit(splits["train"])
    checked = 0
    for context, got in zip(contexts, blend.suggest_many(contexts, 3), strict=True):
        lists = (base.suggest(context, 5), partner.suggest(context, 5))
        if not all(sum(s.score for s in items) > 0 for items in lists):
            continue  # nothing in common with any recorded context: shares are equal, not score / total
        checked += 1
        expected: dict[tuple[str | None, str], float] = {}  # a label, or a free text by its text
        for items in lists:
            total = sum(s.score for s in items)
            for s in items:
                key = (s.label, "" if s.label is not None else s.text)
                expected[key] = expected.get(key, 0.0) + 0.5 * s.score / total
        best = sorted(expected.values(), reverse=True)[:3]
        assert [s.score for s in got] == pytest.approx(best)
        assert [expected[(s.label, "" if s.label is not None else s.text)] for s in got] == pytest.approx(best)
    assert checked > len(contexts) / 2
    threshold = _adapted({"pizza_delivery": {"threshold": 0.6}}).fit(splits["train"])
    answers = threshold.suggest_many(contexts, 3)
    hidden = [not a for a in answers]
    assert any(hidden) and not all(hidden)
    for context, answer in zip(contexts, answers, strict=True):
        own = base.suggest(context, 5)
        total = sum(s.score for s in own)
        top = own[0].score / total if total > 0 else 1 / len(own)  # all 0: equal shares
        assert (answer == own[:3]) if top >= 0.6 else (answer == [])


def test_pickled_it_answers_the_same(splits: dict[str, Dataset]) -> None:
    contexts = _contexts(splits["test"])
    adapted = _adapted({"pizza_delivery": {"blend": 0.75, "threshold": 0.4},
                        "card_support": {"threshold": 0.5}})
    adapted.reuse_fitted(lambda name, params: None).fit(splits["train"])  # a lookup is no setting: not pickled
    restored = pickle.loads(pickle.dumps(adapted))
    assert _exact(restored.suggest_many(contexts, 5)) == _exact(adapted.suggest_many(contexts, 5))


def test_knobs_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown knobs"):
        make_strategy("adapted", {"per_chatbot": {"x": {"weight": 0.5}}})._knobs()
    with pytest.raises(ValueError, match="needs a partner"):
        make_strategy("adapted", {"per_chatbot": {"x": {"blend": 0.5}}})._knobs()  # no partners at all
    two = {"bm25": BM25, "tfidf2": {"strategy": "tfidf", "params": {"window": 2}}}
    with pytest.raises(ValueError, match="needs a partner"):
        make_strategy("adapted", {"partners": two, "per_chatbot": {"x": {"blend": 0.5}}})._knobs()
    knobs = make_strategy("adapted", {"partners": two, "per_chatbot": {"x": {"partner": "tfidf2", "blend": 0.5}}})
    assert knobs._knobs()["x"].partner == "tfidf2"


def test_the_tuners_fusion_of_dev_predictions_is_what_the_strategy_serves(splits: dict[str, Dataset]) -> None:
    train, dev = splits["train"], splits["dev"]
    base_rows = predict(make_strategy("tfidf").fit(train), dev, k=5)
    partner_rows = predict(make_strategy("bm25", BM25["params"]).fit(train), dev, k=5)
    knobs = {"pizza_delivery": (0.5, 0.35), "parcel_tracking": (0.25, None), "card_support": (0.0, 0.7)}
    adapted = _adapted({bot: {"blend": w, **({"threshold": t} if t is not None else {})}
                        for bot, (w, t) in knobs.items()}).fit(train)
    served = predict(adapted, dev, k=5)
    columns = ["conversation_id", "turn_index", "suggested_labels", "suggested_texts", "suggested_scores"]
    hidden = 0
    for bot, (w, t) in knobs.items():
        offline = knob_predictions(base_rows[base_rows["chatbot"] == bot],
                                   partner_rows[partner_rows["chatbot"] == bot], blend=w, threshold=t, k=5)
        online = served[served["chatbot"] == bot]
        assert len(offline) == len(online) > 0
        assert _rows(offline[columns]) == _rows(online[columns])  # same suggestions, same scores, bit for bit
        hidden += int((online["suggested_texts"].map(len) == 0).sum())
    assert hidden > 0  # the thresholds hid some turns
