"""Write data/sample/conversations.jsonl: a small, hand-designed sample for tests and the offline demo.

Three made-up chatbots, each with its response set, and 16 conversations each, generated deterministically from
the scripted flows below (customer phrasings vary, agents mostly pick templates and sometimes type freely).
Nothing here comes from any real dataset. Run: ``python data/sample/make_sample.py``.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

OUT = Path(__file__).with_name("conversations.jsonl")

CHATBOTS = {
    "pizza_delivery": {
        "hello": "Hello, this is Mario's Pizza. How can I help?",
        "escalate_notice": "Let me get a human colleague for you, one moment please.",
        "ask_order_number": "Could you tell me your order number, please?",
        "ask_name": "May I have the name on the order?",
        "inform_order_status": "Your order is in the oven and will leave the shop in about {minutes} minutes.",
        "inform_delay_apology": "I am sorry for the wait. The driver is running about {minutes} minutes late.",
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


def pizza(r: random.Random) -> tuple[list[tuple[str, str, str | None]], str]:
    name, order = r.choice(NAMES), str(r.randint(10000, 99999))
    minutes = r.choice([10, 15, 20, 25])
    t = [
        ("customer", r.choice(["Hi", "Hello there", "Hey"]), None),
        ("bot", CHATBOTS["pizza_delivery"]["hello"], "hello"),
    ]
    problem = r.choice(["late", "late", "address", "status"])
    if problem == "late":
        t.append(("customer", r.choice(["My pizza is over an hour late, where is it?",
                                        "I ordered ages ago and nothing has arrived yet",
                                        "Where is my food? It is really late."]), None))
    elif problem == "address":
        t.append(("customer", r.choice(["I gave the wrong address, can you change it?",
                                        "I need to change the delivery address of my order"]), None))
    else:
        t.append(("customer", r.choice(["When will my order be ready?", "How long until my pizza comes?"]), None))
    t.append(("bot", CHATBOTS["pizza_delivery"]["escalate_notice"], "escalate_notice"))
    t += [("agent", CHATBOTS["pizza_delivery"]["ask_order_number"], "ask_order_number"),
          ("customer", r.choice([f"It is {order}", f"Order number {order}", order]), None),
          ("agent", CHATBOTS["pizza_delivery"]["ask_name"], "ask_name"),
          ("customer", r.choice([name, f"It's under {name}", f"{name}"]), None)]
    if problem == "late":
        t.append(("agent", CHATBOTS["pizza_delivery"]["inform_delay_apology"].format(minutes=minutes),
                  "inform_delay_apology"))
        t.append(("customer", r.choice(["That is really annoying.", "Seriously? I am starving.",
                                        "Okay, but this is not great."]), None))
        t.append(("agent", CHATBOTS["pizza_delivery"]["offer_voucher"], "offer_voucher"))
        t.append(("customer", r.choice(["Thanks, that helps a bit.", "Fine, thank you."]), None))
    elif problem == "address":
        street = r.choice(STREETS)
        t.append(("agent", CHATBOTS["pizza_delivery"]["ask_address"], "ask_address"))
        t.append(("customer", r.choice([f"Please send it to {street}", f"{street}, thanks"]), None))
        t.append(("agent", CHATBOTS["pizza_delivery"]["confirm_address_change"].format(address=street),
                  "confirm_address_change"))
    else:
        t.append(("agent", CHATBOTS["pizza_delivery"]["inform_order_status"].format(minutes=minutes),
                  "inform_order_status"))
        if r.random() < 0.5:
            t.append(("customer", "Can I add a garlic bread to it?", None))
            t.append(("agent", "I am afraid the order is already in the oven, so I cannot add items now.", None))
    return _ending(r, t, "pizza_delivery")


def parcel(r: random.Random) -> tuple[list[tuple[str, str, str | None]], str]:
    number = f"PX{r.randint(100000, 999999)}"
    day = r.choice(DAYS)
    t = [
        ("customer", r.choice(["Hello", "Hi, I have a question about a parcel"]), None),
        ("bot", CHATBOTS["parcel_tracking"]["hello"], "hello"),
    ]
    problem = r.choice(["where", "missing", "redeliver"])
    t.append(("customer", {
        "where": r.choice(["Where is my parcel?", "I want to know when my package arrives"]),
        "missing": r.choice(["It says delivered but I never got my parcel", "My parcel is missing"]),
        "redeliver": r.choice(["I missed the delivery, can you bring it again?",
                               "Nobody was home, I need a redelivery"]),
    }[problem], None))
    t.append(("bot", CHATBOTS["parcel_tracking"]["escalate_notice"], "escalate_notice"))
    t += [("agent", CHATBOTS["parcel_tracking"]["ask_tracking_number"], "ask_tracking_number"),
          ("customer", r.choice([number, f"The tracking number is {number}", f"it's {number}"]), None)]
    if problem == "where":
        t.append(("agent", CHATBOTS["parcel_tracking"]["inform_in_transit"].format(day=day), "inform_in_transit"))
    elif problem == "missing":
        t.append(("agent", CHATBOTS["parcel_tracking"]["inform_delivered"].format(day=day), "inform_delivered"))
        t.append(("customer", r.choice(["None of my neighbours has it.", "I asked next door, nothing."]), None))
        t.append(("agent", CHATBOTS["parcel_tracking"]["open_claim"], "open_claim"))
    else:
        t.append(("agent", CHATBOTS["parcel_tracking"]["ask_redeliver_date"], "ask_redeliver_date"))
        t.append(("customer", r.choice([f"{day} would be good", f"On {day}, please"]), None))
        t.append(("agent", CHATBOTS["parcel_tracking"]["confirm_redelivery"].format(day=day),
                  "confirm_redelivery"))
    return _ending(r, t, "parcel_tracking")


def card(r: random.Random) -> tuple[list[tuple[str, str, str | None]], str]:
    name, digits = r.choice(NAMES), str(r.randint(1000, 9999))
    t = [
        ("customer", r.choice(["Hi", "Hello, I need help with my card"]), None),
        ("bot", CHATBOTS["card_support"]["hello"], "hello"),
        ("customer", r.choice(["I lost my card, please block it", "My card was stolen!",
                               "I think someone copied my card, block it please"]), None),
        ("bot", CHATBOTS["card_support"]["escalate_notice"], "escalate_notice"),
        ("agent", CHATBOTS["card_support"]["ask_name"], "ask_name"),
        ("customer", r.choice([name, f"My name is {name}"]), None),
        ("agent", CHATBOTS["card_support"]["ask_last_digits"], "ask_last_digits"),
        ("customer", r.choice([digits, f"The card ends in {digits}"]), None),
        ("agent", CHATBOTS["card_support"]["ask_dob"], "ask_dob"),
    ]
    if r.random() < 0.25:
        t.append(("customer", r.choice(["I don't remember", "Why do you need that?"]), None))
        t.append(("agent", CHATBOTS["card_support"]["inform_cannot_verify"], "inform_cannot_verify"))
        t.append(("customer", "Okay, I will come to a branch then.", None))
    else:
        t.append(("customer", r.choice(["3 March 1988", "It is 21/07/1975", "12.12.1990"]), None))
        t.append(("agent", CHATBOTS["card_support"]["confirm_card_blocked"].format(digits=digits),
                  "confirm_card_blocked"))
        t.append(("agent", CHATBOTS["card_support"]["inform_new_card_eta"].format(days=r.choice([3, 5, 7])),
                  "inform_new_card_eta"))
        if r.random() < 0.4:
            t.append(("customer", "Will my direct debits still work?", None))
            t.append(("agent", "Yes, your direct debits move to the new card automatically.", None))
    return _ending(r, t, "card_support")


def _ending(r: random.Random, t: list[tuple[str, str, str | None]], bot: str):
    roll = r.random()
    if roll < 0.15:
        return t, "abandoned"  # the customer stops answering
    t.append(("agent", CHATBOTS[bot]["anything_else"], "anything_else"))
    if roll < 0.45:
        t.append(("customer", r.choice(["Yes, what are your opening hours?", "Can the bot tell me the hours?"]),
                  None))
        t.append(("agent", "The assistant can help you with that, I am handing you back now.", None))
        t.append(("bot", "Welcome back! We are open every day from 9 am to 10 pm.", None))
        return t, "handed_back"
    t.append(("customer", r.choice(["No, that's all. Thanks!", "No thank you", "That's everything, bye"]), None))
    t.append(("agent", CHATBOTS[bot]["goodbye"], "goodbye"))
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
            out_turns = []
            for role, text, label in turns:
                at += timedelta(seconds=r.randint(4, 40))
                turn = {"role": role, "text": text, "at": at.isoformat().replace("+00:00", "Z")}
                if label is not None:
                    turn["label"] = label
                out_turns.append(turn)
            escalation = next(i for i, (_, _, label) in enumerate(turns) if label == "escalate_notice") + 1
            lines.append(json.dumps({
                "type": "conversation", "conversation_id": f"{bot}-{n + 1:02d}", "chatbot": bot,
                "source": "sample", "escalation_index": escalation, "outcome": outcome, "turns": out_turns,
            }))
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - len(CHATBOTS)} conversations to {OUT}")


if __name__ == "__main__":
    main()
