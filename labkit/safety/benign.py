"""Benign customer messages for training the offline classifier.

Introduced in notebooks/06_content_safety.ipynb.

Templates written for this kit and filled from the catalog, with the noise real customers add
(greetings, lower or upper case, missing punctuation, a typo). They cover what a shop assistant
hears besides product facts - orders, delivery, returns, sizing, small talk, and everyday words that
sound alarming out of context ("kill the order", "shoot me the specs") - so the classifier learns
that a short or informal message is not an attack. Never used for measuring: the report's benign
questions are other texts (`labkit.safety.redteam.benign_questions`).
"""

from __future__ import annotations

import random

from labkit.schema import load_products, short_name

OPENERS = [
    "",
    "",
    "",
    "Hi, ",
    "Hello! ",
    "Hey ",
    "Quick question: ",
    "Good evening, ",
    "Sorry to bother you, ",
    "Hi there. ",
    "Morning! ",
    "Um, ",
    "OK so ",
    "Question - ",
]
CLOSERS = ["", "", "", " Thanks!", " Thank you.", " Cheers", " thx", " Much appreciated.", " :)", " Please."]
INTENTS = [
    "is the {p} in stock?",
    "when will the {p} be back in stock?",
    "how much does the {p} cost right now?",
    "do you have the {p} in {colour}?",
    "what size {p} should I get if I'm {height} cm tall?",
    "can I return the {p} if I haven't used it?",
    "my {p} arrived damaged, what do I do?",
    "where is my order?",
    "my parcel hasn't arrived yet",
    "can you check my last order?",
    "I want to cancel my order",
    "how do I kill an order I placed by mistake?",
    "can I change my delivery address?",
    "do you ship to {place}?",
    "how long does delivery to {place} take?",
    "what's your returns policy?",
    "is there a warranty on the {p}?",
    "how do I wash the {p}?",
    "can I put the {p} in the dryer?",
    "what's the difference between the {p} and the {q}?",
    "{p} or {q} for a {n}-day trip?",
    "which is lighter, the {p} or the {q}?",
    "is the {p} good for {season} camping?",
    "I need a {cat} for my first hike, any ideas?",
    "recommend a {cat} under ${price}",
    "{cat} for {n} people under {price}",
    "show me all your {cat}",
    "cheapest {cat}?",
    "what colours does the {p} come in?",
    "does the {p} come with a stuff sack?",
    "how heavy is the {p}?",
    "will the {p} fit in my car boot?",
    "is the {p} waterproof?",
    "shoot me the specs of the {p}",
    "the zip on my {p} is killing me, can it be fixed?",
    "I'm dying to try the {p} this weekend",
    "can the {p} survive a storm?",
    "is the {p} bombproof?",
    "will the {p} blow away in strong wind?",
    "can I use the {p} in the snow?",
    "my kids destroyed the {p}, can I buy spare parts?",
    "do you sell a knife for camp cooking?",
    "which axe is best for splitting firewood?",
    "do you have bear spray?",
    "is a hatchet allowed on the trail?",
    "how do I get rid of a dead battery in the {p}?",
    "what fuel does the {p} burn?",
    "can I attack a steep trail in the {p}?",
    "how do I light the {p} safely?",
    "ignore my last question, I meant the {q}",
    "forget the {p}, tell me about the {q}",
    "never mind, show me {cat} instead",
    "can you act as my trip planner for {place}?",
    "pretend I'm a total beginner and explain the {p}",
    "what are the instructions for setting up the {p}?",
    "what are the rules for returns after {n} days?",
    "is there a user guide for the {p}?",
    "are you a bot?",
    "is this a real person?",
    "can I talk to a human?",
    "thanks, that helps",
    "ok",
    "great, thanks",
    "what's your name?",
    "what can you help me with?",
    "hello?",
    "add the {p} to my basket",
    "I can't log in to my account",
    "how do I update my email address?",
    "do members get a discount?",
    "what's my membership level?",
    "what did I buy last time?",
    "remind me what I ordered in {month}",
    "did my order of the {p} ship yet?",
    "I lost the receipt for my {p}, can I still return it?",
    "the {p} smells weird after storage",
    "how do I stop my {p} from going mouldy?",
    "my {p} leaks in heavy rain",
    "is the {p} killer value?",
    "my tracking number doesn't work",
    "the link in your email is broken",
    "how big is the {p} packed?",
    "{p} {dim}?",
    "{cat} {n} kg max",
    "{P_UPPER} PRICE",
    "first aid kit for a week in {place}?",
    "what do I do if I get blisters in the {p}?",
    # follow-ups that lean on the previous turn
    "how big is it?", "and in {colour}?", "what about the other one?", "does it come with a bag?",
    "is that one heavier?", "how much is that one?", "can it take a pounding from rain?",
    "what happens if I break it?", "and if I press the button by accident?", "is that the cheapest?",
    "which one would you pick?", "ok and the warranty?", "would it suit my dad?",
    # not about the shop, but not attacks: the assistant declines them politely
    "write me a poem about my {animal}", "tell me a joke", "what's the weather in {place} tomorrow?",
    "what's a good recipe for {dish}?", "who won the match last night?", "can you help with my homework?",
    "what's the capital of {country}?", "recommend a film for tonight",
    "is the {p} safe to use inside a tent?",
]
COLOURS = ["green", "blue", "red", "black", "orange", "grey", "yellow"]
PLACES = [
    "Scotland",
    "the Alps",
    "Canada",
    "Norway",
    "New Zealand",
    "Wales",
    "Colorado",
    "Japan",
    "the Lake District",
]
SEASONS = ["winter", "summer", "spring", "autumn", "shoulder-season"]
MONTHS = ["January", "March", "May", "July", "September", "November"]
ANIMALS = ["cat", "dog", "hamster", "horse"]
DISHES = ["lasagne", "pancakes", "curry", "risotto"]
COUNTRIES = ["Peru", "Kenya", "Finland", "Chile"]
DIMS = ["weight", "packed size", "price", "capacity", "warranty", "colours"]


def _noise(text: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.15:
        text = text.lower()
    elif r < 0.2:
        text = text.upper()
    if rng.random() < 0.2:
        text = text.rstrip("?.!")
    if rng.random() < 0.1 and len(text) > 8:
        i = rng.randrange(1, len(text) - 2)
        text = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text


def messages(n: int = 1500, seed: int = 11) -> list[str]:
    """`n` distinct benign messages (seeded)."""
    rng = random.Random(seed)
    products = load_products()
    cats = sorted({p.category.lower() for p in products}) + [
        "tent",
        "backpack",
        "sleeping bag",
        "stove",
        "jacket",
        "boots",
        "chair",
        "gps",
    ]
    out: dict[str, None] = {}
    tries = 0
    while len(out) < n and tries < n * 20:
        tries += 1
        p, q = rng.sample(products, 2)
        fill = {
            "p": short_name(p.name),
            "q": short_name(q.name),
            "cat": rng.choice(cats),
            "colour": rng.choice(COLOURS),
            "height": rng.randrange(150, 200),
            "place": rng.choice(PLACES),
            "n": rng.randrange(2, 8),
            "price": rng.choice([50, 100, 150, 200, 300, 500]),
            "season": rng.choice(SEASONS),
            "month": rng.choice(MONTHS),
            "dim": rng.choice(DIMS),
            "P_UPPER": short_name(p.name).upper(),
            "animal": rng.choice(ANIMALS),
            "dish": rng.choice(DISHES),
            "country": rng.choice(COUNTRIES),
        }
        body = rng.choice(INTENTS).format(**fill)
        opener = rng.choice(OPENERS)
        text = opener + (
            body[0].upper() + body[1:] if not opener or opener.endswith((". ", "! ", ": ")) else body
        )
        out[_noise(text + rng.choice(CLOSERS), rng)] = None
    return list(out)
