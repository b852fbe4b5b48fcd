"""Write data/sample/conversations.jsonl: a small, hand-designed sample for tests and the offline demo.

Three made-up chatbots, each with its response set, and 16 conversations each, generated deterministically from
the scripted flows below (customer phrasings vary, agents mostly pick templates and sometimes type freely).
Agents look things up (tool turns: an order's status, a parcel's tracking, an identity check) and their next
reply depends on what came back: a pizza order found on time, found but late, not found, or a lookup that failed
each lead to a different template. Bots look things up too before they escalate (a parcel the customer named, the
orders of the customer's phone number) and after a hand back (the opening hours). Results follow the records
format's convention ``{"items": [...], "total": N}``. Nothing here comes from any real dataset.
Run: ``python data/sample/make_sample.py``.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("conversations.jsonl")

CHATBOTS = {
    "pizza_delivery": {
        "hello": "Hello, this is Mario's Pizza. How can I help?",
        "escalate_notice": "Let me get a human colleague for you, one moment please.",
        "ask_order_number": "Could you tell me your order number, please?",
        "ask_name": "May I have the name on the order?",
        "inform_order_status": "Your order is in the oven and will leave the shop in about {minutes} minutes.",
        "inform_delay_apology": "I am sorry for the wait. The driver is running about {minutes} minutes late.",
        "inform_order_not_found": "I cannot find an order with that number. Could you check it for me, please?",
        "inform_lookup_failed": "Sorry, our order system is not answering right now. Let me try again.",
        "offer_voucher": "As an apology I have added a voucher for a free drink to your account.",
        "ask_address": "What is the new delivery address?",
        "confirm_address_change": "Done, the driver now has the new address: {address}.",
        "anything_else": "Is there anything else I can do for you?",
        "goodbye": "Thank you for ordering with us, enjoy your meal!",
    },
    "parcel_tracking": {
        "hello": "Hi, I am the parcel assistant. What can I do for you?",
        "escalate_notice": "I will connect you with a member of our team.",
        "ask_tracking_number": "Please give me the tracking number of your parcel.",
        "inform_tracking_not_found": "I cannot find a parcel with that tracking number. Could you check it again?",
        "inform_in_transit": "Your parcel is in transit and should arrive on {day}.",
        "inform_delivered": "Our records say the parcel was delivered on {day} and left with a neighbour.",
        "ask_redeliver_date": "Which day would suit you for a new delivery attempt?",
        "confirm_redelivery": "Your parcel will be delivered again on {day}.",
        "open_claim": "I have opened a claim for the missing parcel; you will hear from us within 2 days.",
        "anything_else": "Can I help you with anything else?",
        "goodbye": "Thanks for contacting us. Goodbye!",
    },
    "card_support": {
        "hello": "Welcome to card support. How can I help you today?",
        "escalate_notice": "I am transferring you to an advisor now.",
        "ask_name": "Can I have your full name, please?",
        "ask_last_digits": "What are the last four digits of the card?",
        "ask_dob": "For security, what is your date of birth?",
        "inform_cannot_verify": "I am sorry, I could not verify your identity with those details.",
        "confirm_card_blocked": "Your card ending in {digits} is now blocked. Nobody can use it any more.",
        "inform_new_card_eta": "A new card is on its way and will arrive within {days} working days.",
        "anything_else": "Is there anything else I can help you with?",
        "goodbye": "Thank you for calling card support. Take care!",
    },
}

NAMES = ["Ana Silva", "Ben Okafor", "Chloe Martin", "Dev Patel", "Emma Novak", "Farid Haddad", "Grace Lee",
         "Hugo Berg", "Ines Costa", "Jonas Weber", "Kira Sato", "Liam Byrne", "Maya Cohen", "Noah Fischer"]
STREETS = ["12 Elm Street", "4 Harbour Road", "77 Mill Lane", "9 Rosewood Avenue", "31 Station Square"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]

Turn = dict[str, Any]
FIELD_ORDER = ("role", "by", "name", "request", "result", "error", "text", "at", "label")  # as the workbench writes


def say(role: str, text: str, label: str | None = None) -> Turn:
    """A message turn."""
    turn: Turn = {"role": role, "text": text}
    if label is not None:
        turn["label"] = label
    return turn


def template(bot: str, label: str, **values: Any) -> Turn:
    """An agent turn that sent the chatbot's template ``label``, filled in."""
    return say("agent", CHATBOTS[bot][label].format(**values), label)


def lookup(by: str, name: str, request: dict[str, Any], *, items: list[dict[str, Any]] | None = None,
           error: str | None = None) -> Turn:
    """A tool turn: the records found (``items``), or the failure's text (``error``)."""
    turn: Turn = {"role": "tool", "by": by, "name": name, "request": request}
    if error is not None:
        turn["error"] = error
    else:
        turn["result"] = {"items": items or [], "total": len(items or [])}
    return turn


def _pick(r: random.Random, weights: dict[str, float]) -> str:
    return r.choices(list(weights), list(weights.values()))[0]


def _other_number(r: random.Random, number: str) -> str:
    """A mistyped number: two neighbouring digits swapped (or the last changed)."""
    i = r.randrange(len(number) - 1)
    swapped = number[:i] + number[i + 1] + number[i] + number[i + 2:]
    return swapped if swapped != number else number[:-1] + str((int(number[-1]) + 1) % 10)


def pizza(r: random.Random) -> tuple[list[Turn], str]:
    bot = "pizza_delivery"
    name, order = r.choice(NAMES), str(r.randint(10000, 99999))
    phone = f"+44 7700 9{r.randint(10000, 99999)}"
    minutes = r.choice([10, 15, 20, 25])
    t = [say("customer", r.choice(["Hi", "Hello there", "Hey"])), say("bot", CHATBOTS[bot]["hello"], "hello")]
    problem = r.choice(["late", "late", "address", "status"])
    if problem == "late":
        t.append(say("customer", r.choice(["My pizza is over an hour late, where is it?",
                                           "I ordered ages ago and nothing has arrived yet",
                                           "Where is my food? It is really late."])))
    elif problem == "address":
        t.append(say("customer", r.choice(["I gave the wrong address, can you change it?",
                                           "I need to change the delivery address of my order"])))
    else:
        t.append(say("customer", r.choice(["When will my order be ready?", "How long until my pizza comes?"])))
    # The bot looks up the orders of the phone number the customer chats from; one order found: no need to ask.
    known = False
    if r.random() < 0.4:
        known = r.random() < 0.7
        found = [{"order": order, "placed": f"18:{r.randint(10, 59)}", "name": name}] if known else []
        t.append(lookup("bot", "find_orders", {"phone": phone}, items=found))
    t.append(say("bot", CHATBOTS[bot]["escalate_notice"], "escalate_notice"))
    if not known:
        t += [template(bot, "ask_order_number"),
              say("customer", r.choice([f"It is {order}", f"Order number {order}", order]))]
    t += [template(bot, "ask_name"), say("customer", r.choice([name, f"It's under {name}"]))]

    if problem == "address":
        street = r.choice(STREETS)
        t += [template(bot, "ask_address"),
              say("customer", r.choice([f"Please send it to {street}", f"{street}, thanks"]))]
        request = {"order": order, "address": street}
        if r.random() < 0.25:
            t += [lookup("agent", "change_address", request, error="the order has already left the shop"),
                  say("agent", "I am sorry, the driver has already left, so I cannot change the address any more.")]
        else:
            t += [lookup("agent", "change_address", request,
                         items=[{"order": order, "address": street, "driver_notified": True}]),
                  template(bot, "confirm_address_change", address=street)]
        return _ending(r, t, bot)

    weights = ({"on_time": 0.2, "late": 0.4, "not_found": 0.2, "failed": 0.2} if problem == "late"
               else {"on_time": 0.45, "late": 0.15, "not_found": 0.2, "failed": 0.2})
    if known:  # the bot's lookup gave the number: nobody can have mistyped it
        del weights["not_found"]
    outcome = _pick(r, weights)
    if outcome == "not_found":  # the customer mistyped the number; found on the second look
        typo = _other_number(r, order)
        t += [lookup("agent", "order_status", {"order": typo}, items=[]),
              template(bot, "inform_order_not_found"),
              say("customer", r.choice([f"Sorry, it is {order}", f"Oops, {order}", f"Let me see... {order}"]))]
        outcome = _pick(r, {"on_time": 0.5, "late": 0.5})
    elif outcome == "failed":  # the order system timed out; the second try answers
        t += [lookup("agent", "order_status", {"order": order}, error="the order system did not answer in 5 s"),
              template(bot, "inform_lookup_failed"),
              say("customer", r.choice(["Okay, I will wait.", "Sure, no problem."]))]
        outcome = _pick(r, {"on_time": 0.5, "late": 0.5})
    late = outcome == "late"
    found = {"order": order, "status": "on_the_way" if late else "in_oven", "minutes": minutes, "late": late}
    t.append(lookup("agent", "order_status", {"order": order}, items=[found]))
    if late:
        t += [template(bot, "inform_delay_apology", minutes=minutes),
              say("customer", r.choice(["That is really annoying.", "Seriously? I am starving.",
                                        "Okay, but this is not great."])),
              template(bot, "offer_voucher"),
              say("customer", r.choice(["Thanks, that helps a bit.", "Fine, thank you."]))]
    else:
        t.append(template(bot, "inform_order_status", minutes=minutes))
        if r.random() < 0.5:
            t += [say("customer", "Can I add a garlic bread to it?"),
                  say("agent", "I am afraid the order is already in the oven, so I cannot add items now.")]
    return _ending(r, t, bot)


def parcel(r: random.Random) -> tuple[list[Turn], str]:
    bot = "parcel_tracking"
    number = f"PX{r.randint(100000, 999999)}"
    day, again = r.sample(DAYS, 2)
    t = [say("customer", r.choice(["Hello", "Hi, I have a question about a parcel"])),
         say("bot", CHATBOTS[bot]["hello"], "hello")]
    problem = r.choice(["where", "missing", "redeliver"])
    status = {"where": _pick(r, {"in_transit": 0.75, "delivered": 0.25}),
              "missing": _pick(r, {"in_transit": 0.3, "delivered": 0.7}),
              "redeliver": "awaiting_redelivery"}[problem]
    record = {"tracking_number": number, "status": status, "day": day}
    named = r.random() < 0.4  # the customer names the parcel to the bot, which looks it up before escalating
    suffix = f" It is {number}." if named else ""
    t.append(say("customer", {
        "where": r.choice(["Where is my parcel?", "I want to know when my package arrives."]),
        "missing": r.choice(["It says delivered but I never got my parcel.", "My parcel is missing."]),
        "redeliver": r.choice(["I missed the delivery, can you bring it again?",
                               "Nobody was home, I need a redelivery."]),
    }[problem] + suffix))
    if named:
        t.append(lookup("bot", "track_parcel", {"tracking_number": number}, items=[record]))
    t.append(say("bot", CHATBOTS[bot]["escalate_notice"], "escalate_notice"))
    if not named:
        t.append(template(bot, "ask_tracking_number"))
        if r.random() < 0.2:  # a mistyped number first
            typo = "PX" + _other_number(r, number[2:])
            t += [say("customer", r.choice([typo, f"The tracking number is {typo}"])),
                  lookup("agent", "track_parcel", {"tracking_number": typo}, items=[]),
                  template(bot, "inform_tracking_not_found")]
        t += [say("customer", r.choice([number, f"The tracking number is {number}", f"it's {number}"])),
              lookup("agent", "track_parcel", {"tracking_number": number}, items=[record])]
    if status == "in_transit":
        t.append(template(bot, "inform_in_transit", day=day))
    elif status == "delivered":
        t += [template(bot, "inform_delivered", day=day),
              say("customer", r.choice(["None of my neighbours has it.", "I asked next door, nothing."])),
              template(bot, "open_claim")]
    else:
        t += [template(bot, "ask_redeliver_date"),
              say("customer", r.choice([f"{again} would be good", f"On {again}, please"])),
              lookup("agent", "book_redelivery", {"tracking_number": number, "day": again},
                     items=[{"tracking_number": number, "day": again, "booked": True}]),
              template(bot, "confirm_redelivery", day=again)]
    return _ending(r, t, bot)


def card(r: random.Random) -> tuple[list[Turn], str]:
    bot = "card_support"
    name, digits = r.choice(NAMES), str(r.randint(1000, 9999))
    t = [
        say("customer", r.choice(["Hi", "Hello, I need help with my card"])),
        say("bot", CHATBOTS[bot]["hello"], "hello"),
        say("customer", r.choice(["I lost my card, please block it", "My card was stolen!",
                                  "I think someone copied my card, block it please"])),
        say("bot", CHATBOTS[bot]["escalate_notice"], "escalate_notice"),
        template(bot, "ask_name"),
        say("customer", r.choice([name, f"My name is {name}"])),
        template(bot, "ask_last_digits"),
        say("customer", r.choice([digits, f"The card ends in {digits}"])),
        template(bot, "ask_dob"),
    ]
    if r.random() < 0.2:
        t += [say("customer", r.choice(["I don't remember", "Why do you need that?"])),
              template(bot, "inform_cannot_verify"),
              say("customer", "Okay, I will come to a branch then.")]
        return _ending(r, t, bot)
    dob = r.choice(["1988-03-03", "1975-07-21", "1990-12-12"])
    said = {"1988-03-03": "3 March 1988", "1975-07-21": "It is 21/07/1975", "1990-12-12": "12.12.1990"}[dob]
    t.append(say("customer", said))
    verified = r.random() < 0.8
    t.append(lookup("agent", "verify_identity", {"name": name, "last_digits": digits, "date_of_birth": dob},
                    items=[{"verified": verified, "card": f"...{digits}"}]))
    if not verified:
        t += [template(bot, "inform_cannot_verify"), say("customer", "Okay, I will come to a branch then.")]
        return _ending(r, t, bot)
    days = r.choice([3, 5, 7])
    t += [lookup("agent", "block_card", {"last_digits": digits},
                 items=[{"card": f"...{digits}", "blocked": True, "new_card_days": days}]),
          template(bot, "confirm_card_blocked", digits=digits),
          template(bot, "inform_new_card_eta", days=days)]
    if r.random() < 0.4:
        t += [say("customer", "Will my direct debits still work?"),
              say("agent", "Yes, your direct debits move to the new card automatically.")]
    return _ending(r, t, bot)


def _ending(r: random.Random, t: list[Turn], bot: str) -> tuple[list[Turn], str]:
    roll = r.random()
    if roll < 0.15:
        return t, "abandoned"  # the customer stops answering
    t.append(template(bot, "anything_else"))
    if roll < 0.45:
        t += [say("customer", r.choice(["Yes, what are your opening hours?", "Can the bot tell me the hours?"])),
              say("agent", "The assistant can help you with that, I am handing you back now."),
              lookup("bot", "opening_hours", {"chatbot": bot},
                     items=[{"days": "every day", "opens": "9 am", "closes": "10 pm"}]),
              say("bot", "Welcome back! We are open every day from 9 am to 10 pm.")]
        return t, "handed_back"
    t += [say("customer", r.choice(["No, that's all. Thanks!", "No thank you", "That's everything, bye"])),
          template(bot, "goodbye")]
    return t, "resolved"


def main() -> None:
    r = random.Random(20261126)
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    lines = [json.dumps({"type": "chatbot", "chatbot": bot, "responses": responses,
                         "meta": {"source": "sample"}}) for bot, responses in CHATBOTS.items()]
    for bot, flow in (("pizza_delivery", pizza), ("parcel_tracking", parcel), ("card_support", card)):
        for n in range(16):
            turns, outcome = flow(r)
            at = start + timedelta(hours=r.randint(0, 24 * 20), minutes=r.randint(0, 59))
            for turn in turns:
                at += timedelta(seconds=r.randint(1, 3) if turn["role"] == "tool" else r.randint(4, 40))
                turn["at"] = at.isoformat().replace("+00:00", "Z")
            turns = [{key: turn[key] for key in FIELD_ORDER if key in turn} for turn in turns]
            escalation = next(i for i, turn in enumerate(turns) if turn.get("label") == "escalate_notice") + 1
            lines.append(json.dumps({
                "type": "conversation", "conversation_id": f"{bot}-{n + 1:02d}", "chatbot": bot,
                "source": "sample", "escalation_index": escalation, "outcome": outcome, "turns": turns,
            }))
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - len(CHATBOTS)} conversations to {OUT}")


if __name__ == "__main__":
    main()
