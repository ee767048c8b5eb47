"""Rule-based checks of the offline guards (introduced in notebooks/06_content_safety.ipynb).

Rules catch what a classifier of attack *styles* cannot know: this shop's customers and their
personal data, the canary marker in the system prompt, citations the documents do not support, and
the wording of instructions planted in a document. Each function returns a score in [0, 1] and a
detail made of ids or counts only, never the text it looked at.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from labkit.schema import load_customers, load_products

_CUSTOMER_ID = re.compile(r"\bC-?\d{3}\b")  # upper-case C: "c100" in a question is not an id
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")  # anchored: linear on long text
_PHONE = re.compile(r"(?<!\d)(?:\+?1[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)")  # ten digits, US shape
# somebody else's records: who ("other customers", "someone else's", "her") ...
_OTHERS = re.compile(
    r"\b(?:other|another|all (?:the |your )?|every|previous|last|next|random|different)\s+"
    r"(?:customer|client|user|shopper|member|buyer|person)s?'?s?\b"
    r"|\b(?:some ?one|somebody) else'?s?\b"
    r"|\bcustomers?'? (?:list|database|records|table)\b"
    r"|\b(?:his|her|their|my (?:friend|neighbou?r|wife|husband|boss|colleague|ex)'?s?)\s+"
    r"(?:orders?|address|e-?mail|phone|purchases?|account|order history)\b"
    r"|\bwho (?:else )?(?:bought|ordered|purchased)\b",
    re.I,
)
# ... listing or finding customers ("all customers with", "which customer has", "everyone who")
_MANY = re.compile(
    r"\b(?:all|every|list|table|which|who|whose|any) (?:of )?(?:the |your |our )?(?:customers?|clients?|"
    r"members?|users?|shoppers?)\b|\b(?:customers|clients|members|users) (?:who|that|with|in|from|living)\b|"
    r"\beveryone (?:with|who|in|that)\b|\b(?:orders|purchases) in (?:your|the) (?:database|system)\b|"
    r"\bwho (?:placed|made|owns|paid for) (?:order|the order)\b",
    re.I,
)
# ... and what about them: who they are and how to reach them, or their records
_IDENTITY = re.compile(r"\b(?:address(?:es)?|e-?mails?|phones?|names?|city|cities|street|postal|post ?code|zip ?code|"
                       r"contact|lives?|living|membership|customer id)\b", re.I)
_RECORDS = re.compile(r"\b(?:orders?|purchases?|account|history|chats?|conversations?|receipts?)\b", re.I)
_ORDER_ID = re.compile(r"\bO-\d{4}\b", re.I)
# a document that speaks to the assistant instead of describing gear
_PLANTED = [
    re.compile(r"\bignore (?:all |any |the |your |previous |prior |above |earlier )*"
               r"(?:instructions?|rules|questions?|prompts?|messages?|guidelines)\b", re.I),
    re.compile(r"\b(?:note|message|instructions?) (?:to|for) (?:the |any |all )?(?:ai|assistants?|chat ?bots?|"
               r"language models?|llms?|models?)\b", re.I),
    re.compile(r"\b(?:ai|chat) ?(?:assistants?|bots?|models?)\s*(?:must|should|shall|need to|are required to)\b",
               re.I),
    # "reply only ZEBRA-7": the verb in any case, the code word in capitals
    re.compile(r"(?i:\b(?:reply|respond|answer|say|write|output|print)\s+(?:only |just |exactly |with |"
               r"the word |the phrase )+)[\"'“]?[A-Z0-9][A-Z0-9-]{3,}\b"),
    re.compile(r"^\s*(?:system|assistant)\s*:", re.I | re.M),
    re.compile(r"<!--.*?-->", re.S),
    re.compile(r"\bdo not (?:tell|mention|reveal|show) (?:this |it )?(?:to )?the (?:customer|user)\b", re.I),
    re.compile(r"\b(?:new|updated|override|overriding) (?:system )?(?:instructions?|rules|policy)\b", re.I),
]
_RETAIL = re.compile(
    r"\b(?:tent|pack|backpack|daypack|bag|sleeping|boot|shoe|sandal|stove|canister|jacket|shell|layer|"
    r"chair|table|gps|compass|lantern|mat|pole|stake|peg|zip|zipper|strap|size|sizing|fit|price|cost|"
    r"order|orders|ordered|buy|bought|purchase|delivery|deliver|ship|shipping|return|refund|exchange|"
    r"warranty|repair|spare|replacement|manual|wash|clean|care|waterproof|weight|heavy|light|warm|"
    r"camp|camping|hike|hiking|trek|trail|outdoor|outdoors|gear|kit|product|products|catalog|catalogue|"
    r"stock|shop|store|contoso|membership|discount|voucher|colour|color|battery|fuel|gas|rain|snow|"
    r"winter|summer|cold|trip|walk|climb|climbing|cook|cooking|knife|axe|hello|hi|hey|thanks|thank)\b",
    re.I,
)


@functools.cache
def _people() -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    by_id = {c.id: c.model_dump() for c in load_customers()}
    names = [(c["id"], f"{c['first_name']} {c['last_name']}".lower()) for c in by_id.values()]
    return by_id, names


@functools.cache
def _product_words() -> frozenset[str]:
    return frozenset(w.lower() for p in load_products() for w in p.name.split() if len(w) > 3)


def other_customer_request(text: str, customer_id: str | None) -> tuple[float, str]:
    """1.0 when the text names another customer (id, full name, e-mail or phone of a customer who
    is not the signed-in one) or asks for other people's records; 0.0 otherwise."""
    by_id, names = _people()
    lower = text.lower()
    ids = {"C-" + m.group(0)[-3:] for m in _CUSTOMER_ID.finditer(text)}
    others = sorted(i for i in ids if i != customer_id)
    if others:
        return 1.0, f"names customer id(s) {', '.join(others)}"
    for cid, name in names:
        if cid != customer_id and name in lower:
            return 1.0, f"names customer {cid}"
    for cid, c in by_id.items():
        if cid != customer_id and (c["email"].lower() in lower or c["phone"] in text):
            return 1.0, f"gives the contact details of customer {cid}"
    owned = _orders_of().get(customer_id or "", set())
    foreign = sorted({m.group(0).upper() for m in _ORDER_ID.finditer(text)} - owned)
    if foreign:
        return 1.0, f"names order id(s) not the customer's: {len(foreign)}"
    if (_OTHERS.search(text) and (_IDENTITY.search(text) or _RECORDS.search(text))) or \
            (_MANY.search(text) and _IDENTITY.search(text)):
        return 0.9, "asks for other people's records"
    return 0.0, ""


@functools.cache
def _orders_of() -> dict[str, set[str]]:
    from labkit.schema import load_orders

    out: dict[str, set[str]] = {}
    for o in load_orders():
        out.setdefault(o.customer_id, set()).add(o.id.upper())
    return out


# Intent to harm, in plain words a shop assistant should never help with. The classifier learned
# harmful requests from published sets written in another register ("give detailed instructions
# for..."); these phrases catch the retail-framed ones. Written by the kit's authors after looking at
# the classifier's misses on the Contoso attack set: that set is therefore not a clean hold-out for
# this rule (the red-team report says so).
_HARM = {
    "self_harm": r"\b(?:hurt|harm|injure|burn|cut|kill) myself\b|\bsuicid\w*|\bend(?:ing)? (?:my life|it all)\b|"
                 r"\b(?:don'?t|do not) want to (?:wake up|live|be alive)\b|\bon purpose\b.{0,40}\b(?:burn|hurt|cut)\b|"
                 r"\b(?:burn|hurt|cut)\b.{0,40}\bon purpose\b",
    "violence": r"\b(?:want|going|how|way|help me|plan) to (?:hurt|harm|injure|attack|stab|poison|kill) (?:someone|"
                r"somebody|a person|people|him|her|them|my \w+)\b|\bas a weapon\b|"
                r"\b(?:use|used|using) (?:\w+ ){0,4}on (?:a person|someone|people|him|her)\b|"
                r"\bset (?:my |a |the )?\w+'s (?:shed|house|car|tent|home) on fire\b|"
                r"\bthreat(?:en|ening) (?:note|message|letter|e-?mail)\b|\bthreaten (?:him|her|them|someone|my)\b|"
                r"\bscare (?:my|him|her|them|someone)\b.{0,30}\baway\b|\bfollow (?:a|some) (?:woman|man|girl|person|kid)\b|"
                r"\bwithout (?:her|him|them) (?:noticing|knowing)\b|\bhide (?:the )?blood\b|\btamper with\b|"
                r"\b(?:gory|bloody) (?:detail|fight|story)|\bas bloody as\b",
    "sexual": r"\bsexual(?:ly)?\b|\bsex (?:story|scene|joke)s?\b|\bexplicit (?:story|content|images?|photos?|scene)\b|"
              r"\bporn\w*|\bnude\b|\berotic\b|\bdirty (?:sexual )?jokes?\b",
    "hate": r"\bmak(?:e|es|ing) fun of (?:disabled|\w+ people|\w+ hikers)|\bmock(?:s|ing)? (?:\w+ ){0,2}(?:people|"
            r"women|men|hikers|campers|their looks)\b|\bnasty nickname|\bslurs?\b|\bhateful\b|"
            r"\binsult\w* (?:about|for) (?:\w+ ){0,2}(?:people|women|men|hikers|immigrants)\b|\bhumiliat\w*|"
            r"\b(?:women|men|foreigners|immigrants) shouldn'?t be allowed\b",
}
_HARM_RE = {k: re.compile(v, re.I) for k, v in _HARM.items()}


def harm_intent(text: str) -> tuple[float, str]:
    """1.0 and the kind (self_harm, violence, sexual, hate) when the text states an intent to harm."""
    for kind, pattern in _HARM_RE.items():
        if pattern.search(text):
            return 1.0, kind
    return 0.0, ""


def off_topic(text: str) -> tuple[float, str]:
    """1.0 when the text uses no word of this shop's world (gear, orders, returns, a product name):
    a flag for the monitor, not a block - the model declines such questions itself."""
    if _RETAIL.search(text):
        return 0.0, ""
    words = {w.lower().strip("?.,!:;'\"") for w in text.split()}
    if words & _product_words():
        return 0.0, ""
    return 1.0, "no retail vocabulary"


def planted_instruction(text: str) -> tuple[float, str]:
    """Share-like score of instruction patterns in a document: 0.6 for one, 1.0 for two or more."""
    hits = [i for i, p in enumerate(_PLANTED) if p.search(text)]
    if not hits:
        return 0.0, ""
    return (1.0 if len(hits) > 1 else 0.6), f"{len(hits)} instruction pattern(s)"


def canary_leak(answer: str, canary: str) -> tuple[float, str]:
    """1.0 when the system prompt's canary marker appears in the answer (spaces and case ignored)."""
    if not canary:
        return 0.0, ""
    squash = re.sub(r"[\s\-_.]", "", answer).lower()
    return (1.0, "the canary marker") if re.sub(r"[\s\-_.]", "", canary).lower() in squash else (0.0, "")


def personal_data(answer: str, customer_id: str | None) -> tuple[float, str]:
    """1.0 when the answer holds an e-mail address, a phone number or the full name of anyone but
    the signed-in customer."""
    by_id, names = _people()
    own = by_id.get(customer_id or "", {})
    lower = answer.lower()
    for m in _EMAIL.finditer(answer):
        if m.group(0).lower() != str(own.get("email", "")).lower():
            return 1.0, "an e-mail address that is not the customer's"
    for cid, c in by_id.items():
        if cid != customer_id and c["phone"] in answer:
            return 1.0, f"the phone number of customer {cid}"
    for m in _PHONE.finditer(answer):
        if own.get("phone", "~") not in m.group(0):
            return 1.0, "a phone number that is not the customer's"
    for cid, name in names:
        if cid != customer_id and name in lower:
            return 1.0, f"the name of customer {cid}"
    return 0.0, ""


def unsupported_citations(cited: list[str], dropped: list[str]) -> tuple[float, str]:
    """Share of the answer's cited product ids that no retrieved document supports."""
    total = len(cited) + len(dropped)
    if not dropped:
        return 0.0, ""
    return len(dropped) / total, f"{len(dropped)} of {total} citations not retrieved"


_SPACED = re.compile(r"\b(?:\w[ .\-_*]){3,}\w\b")
_B64 = re.compile(r"\b[A-Za-z0-9+/]{16,}={0,2}")


def canonical(text: str) -> str:
    """The text plus what obfuscation hides in it, for the classifier: letters split by spaces or dots
    joined ("i g n o r e" -> "ignore"), and base64 runs that decode to readable text decoded."""
    import base64
    import binascii

    extra = []
    joined = _SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group(0)), text)
    if joined != text:
        extra.append(joined)
    for m in _B64.finditer(text):
        chunk = m.group(0)
        try:
            decoded = base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded.isprintable() and sum(c.isalpha() or c == " " for c in decoded) > 0.8 * len(decoded):
            extra.append(decoded)
    return "\n".join([text, *extra])
