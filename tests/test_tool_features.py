"""What the strategies make of tool turns: a lookup's outcome decides the next reply when the words cannot."""

from __future__ import annotations

import dataclasses
import random

import pytest

from copilot.data.context import Context, ContextTurn, contexts_for, render_tool
from copilot.data.records import Chatbot, Conversation, Dataset, ToolCall, Turn
from copilot.serving.export import context_from_json, context_to_json
from copilot.strategies import make_strategy
from copilot.strategies.common import query_text, tool_summary

RESPONSES = {
    "ask_id": "What is your order number?",
    "inform_status": "Your order is on its way.",
    "inform_not_found": "I cannot find an order with that number. Could you check it?",
    "bye": "Goodbye!",
}


def lookup(number: str, found: bool) -> Turn:
    result = {"items": [{"order": number, "status": "shipped"}]} if found else {"items": [], "total": 0}
    return Turn("tool", "", by="agent", tool=ToolCall("order_lookup", {"order": number}, result))


def conversation(i: int, found: bool) -> Conversation:
    """The customer says the same things whatever the lookup returns; only the lookup tells the replies apart."""
    number = f"A-{random.Random(i).randint(1000, 9999)}"
    turns = (
        Turn("customer", "hi, where is my order?"),
        Turn("agent", RESPONSES["ask_id"], label="ask_id"),
        Turn("customer", f"it is {number}"),
        lookup(number, found),
        Turn("agent", RESPONSES["inform_status" if found else "inform_not_found"],
             label="inform_status" if found else "inform_not_found"),
        Turn("customer", "ok, thanks"),
        Turn("agent", RESPONSES["bye"], label="bye"),
    )
    return Conversation(f"c{i}", "shop", "test", turns, 1, "resolved")


def dataset(ids: range) -> Dataset:
    return Dataset({"shop": Chatbot("shop", RESPONSES)}, [conversation(i, found=i % 2 == 0) for i in ids])


def without_tools(data: Dataset) -> Dataset:
    return Dataset(data.chatbots, [dataclasses.replace(c, turns=tuple(t for t in c.turns if t.role != "tool"))
                                   for c in data.conversations])


def after_lookup_accuracy(strategy_name: str, params: dict, train: Dataset, test: Dataset) -> float:
    strategy = make_strategy(strategy_name, params).fit(train)
    hits = []
    for conv in test.conversations:
        for index, context in contexts_for(conv):
            if conv.turns[index].label in ("inform_status", "inform_not_found"):
                hits.append(strategy.suggest(context, 1)[0].label == conv.turns[index].label)
    assert len(hits) == len(test.conversations)
    return sum(hits) / len(hits)


@pytest.mark.parametrize(("name", "params"), [
    ("classifier", {"model": "sgd", "n_models": 1}),
    ("tfidf", {"neighbours": 5}),
    ("bm25", {"neighbours": 5}),
])
def test_the_lookup_outcome_decides_the_reply(name: str, params: dict) -> None:
    train, test = dataset(range(40)), dataset(range(100, 120))
    assert after_lookup_accuracy(name, params, train, test) == 1.0
    # the same conversations without their lookups: the words alone cannot tell found from not found
    assert after_lookup_accuracy(name, params, without_tools(train), without_tools(test)) <= 0.75


def test_retrieval_without_the_tools_setting_ignores_lookups() -> None:
    conv = conversation(0, True)
    number = conv.turns[3].tool.request["order"]
    context = next(ctx for i, ctx in contexts_for(conv) if i == 4)
    assert query_text(context) == f"it is {number}"
    assert query_text(context, tools=True) == f"it is {number}\norder lookup found 1 order {number} status shipped"
    assert tool_summary(ToolCall("order_lookup", {"order": "x"}, {"items": [], "total": 0})) == (
        "order lookup found nothing")
    assert tool_summary(ToolCall("order_lookup", {"order": "x"}, None, "timeout")) == (
        "order lookup failed timeout")


def test_a_tool_turn_renders_the_same_whatever_the_key_order() -> None:
    a = ToolCall("hotel_search", {"Location": "West", "Cost": "cheap"},
                 {"items": [{"Name": "Hyatt", "Rating": 4}, {"Name": "Inn", "Rating": 2}], "total": 12})
    b = ToolCall("hotel_search", {"Cost": "cheap", "Location": "West"},
                 {"total": 12, "items": [{"Rating": 4, "Name": "Hyatt"}, {"Rating": 2, "Name": "Inn"}]})
    assert render_tool(a) == render_tool(b) == (
        "hotel_search(Cost=cheap, Location=West) found 12 results: Name=Hyatt, Rating=4 | Name=Inn, Rating=2")
    assert render_tool(ToolCall("x", {}, None, "HTTP 503")) == "x() failed: HTTP 503"
    assert render_tool(ToolCall("x", {"q": 1}, {})) == "x(q=1) found nothing"


def test_the_served_model_input_keeps_tool_turns() -> None:
    tool = ToolCall("order_lookup", {"order": "A-1"}, {"items": [{"status": "late", "minutes": 20}]}, None)
    context = Context("shop", (ContextTurn("customer", "hi"), ContextTurn("tool", render_tool(tool), None, tool,
                                                                          "agent")))
    assert context_from_json(context_to_json(context)) == context
