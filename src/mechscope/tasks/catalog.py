"""The standard behaviour tasks, built for a model's tokenizer: IOI, greater-than, induction,
factual recall. Each is seeded and versioned (bump ``VERSION`` when the generator changes)."""

from __future__ import annotations

import random

import torch

from ..checks import positive_int
from ..models.model import Model
from .base import Task, single_tokens, token_ids

VERSION = 1

# Wang et al. (2022), the BABA templates; {A} is the indirect object, {B} the subject. The ABBA
# order swaps the first two names.
IOI_TEMPLATES = [
    "Then, {B} and {A} went to the {PLACE}. {B} gave a {OBJECT} to",
    "Then, {B} and {A} had a lot of fun at the {PLACE}. {B} gave a {OBJECT} to",
    "Then, {B} and {A} were working at the {PLACE}. {B} decided to give a {OBJECT} to",
    "Then, {B} and {A} were thinking about going to the {PLACE}. {B} wanted to give a {OBJECT} to",
    "Then, {B} and {A} had a long argument, and afterwards {B} said to",
    "After {B} and {A} went to the {PLACE}, {B} gave a {OBJECT} to",
    "When {B} and {A} got a {OBJECT} at the {PLACE}, {B} decided to give it to",
    "When {B} and {A} got a {OBJECT} at the {PLACE}, {B} decided to give the {OBJECT} to",
    "While {B} and {A} were working at the {PLACE}, {B} gave a {OBJECT} to",
    "While {B} and {A} were commuting to the {PLACE}, {B} gave a {OBJECT} to",
    "After the lunch, {B} and {A} went to the {PLACE}. {B} gave a {OBJECT} to",
    "Afterwards, {B} and {A} went to the {PLACE}. {B} gave a {OBJECT} to",
    "Then, {B} and {A} had a long argument. Afterwards {B} said to",
    "The {PLACE} {B} and {A} went to had a {OBJECT}. {B} gave it to",
    "Friends {B} and {A} found a {OBJECT} at the {PLACE}. {B} gave it to",
]
NAMES = [" Mary", " John", " Tom", " James", " Dan", " Sid", " Martin", " Amy", " Alice", " Bob", " Paul", " Anne",
         " Lisa", " Kate", " Mark", " Sarah", " David", " Emma", " Jack", " Rose", " Adam", " Peter", " Laura",
         " Claire", " Michael", " Robert", " Susan", " Karen", " Linda", " George", " Anna", " Kevin"]
PLACES = ["store", "garden", "restaurant", "school", "hospital", "office", "house", "station"]
OBJECTS = ["ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack"]


def _encode(model: Model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=True)["input_ids"]


def ioi(model: Model, n: int = 64, seed: int = 0) -> Task:
    """Indirect object identification: half BABA, half ABBA; corrupted = the three name
    occurrences replaced by three other distinct names (the ABC distribution); metric
    logit(IO) − logit(S)."""
    positive_int(n, "n", "prompt pairs")
    names = single_tokens(model, NAMES)
    if len(names) < 6:
        raise ValueError(f"{model.name}'s tokenizer has only {len(names)} single-token names of {len(NAMES)}")
    rng = random.Random(seed)
    clean, corrupted, good, bad, texts = [], [], [], [], []
    for i in range(n):
        template = rng.choice(IOI_TEMPLATES)
        if i % 2:  # ABBA: the first two names swapped
            template = template.replace("{B} and {A}", "{A} and {B}", 1)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        a, b, c, d, e = rng.sample(names, 5)
        fill = lambda x, y, z: (template.replace("{A}", x).replace("{B}", y, 1).replace("{B}", z)  # noqa: E731
                                .replace("{PLACE}", place).replace("{OBJECT}", obj))
        text = fill(a, b, b)
        clean.append(_encode(model, text))
        corrupted.append(_encode(model, fill(c, d, e)))
        good.append(token_ids(model, a))
        bad.append(token_ids(model, b))
        texts.append(text)
    return Task("ioi", VERSION, seed, clean, corrupted, good, bad, "logit_diff", texts)


NOUNS = ["war", "expedition", "voyage", "reign", "project", "siege", "drought", "famine", "strike", "occupation",
         "pilgrimage", "dynasty", "journey", "conflict", "tournament", "construction"]


def greater_than(model: Model, n: int = 64, seed: int = 0) -> Task:
    """Hanna et al. (2023): "The {noun} lasted from the year XXYY to the year XX"; corrupted YY =
    01. Metric P(later years) − P(earlier) over the next token: two-digit tokens YY+1…99 vs 00…YY−1
    when the tokenizer has them (GPT-2), else the tens digit (> vs < YY's tens digit) for tokenizers
    that split digits (SmolLM2, Llama)."""
    positive_int(n, "n", "prompt pairs")
    rng = random.Random(seed)
    two_digit = len(token_ids(model, "17")) == 1 and len(token_ids(model, "42")) == 1
    digit = {d: token_ids(model, str(d))[-1] for d in range(10)}
    pair = {y: token_ids(model, f"{y:02d}") for y in range(100)} if two_digit else {}
    clean, corrupted, good, bad, texts = [], [], [], [], []
    for _ in range(n):
        noun, century, yy = rng.choice(NOUNS), rng.choice(range(11, 20)), rng.randint(12, 88)
        text = f"The {noun} lasted from the year {century}{yy:02d} to the year {century}"
        ids, ids_c = _encode(model, text), _encode(model, text.replace(f"{century}{yy:02d}", f"{century}01"))
        if len(ids) != len(ids_c):
            continue
        if two_digit:
            later = [pair[y][0] for y in range(yy + 1, 100) if len(pair[y]) == 1]
            earlier = [pair[y][0] for y in range(0, yy) if len(pair[y]) == 1]
        else:
            later = [digit[d] for d in range(yy // 10 + 1, 10)]
            earlier = [digit[d] for d in range(0, yy // 10)]
        clean.append(ids)
        corrupted.append(ids_c)
        good.append(later)
        bad.append(earlier)
        texts.append(text)
    return Task("greater-than", VERSION, seed, clean, corrupted, good, bad, "prob_diff", texts)


def induction(model: Model, n: int = 32, length: int = 20, seed: int = 0, low: int = 1000) -> Task:
    """Repeated random tokens: clean = A + A[:-1] (the next token is A[-1], seen after A[-2]
    before); corrupted = B + A[:-1] (no earlier copy). Metric logit(A[-1]) − logit(B[-1])."""
    positive_int(n, "n", "prompt pairs")
    positive_int(length, "length", "tokens per random sequence")
    vocab = model.cfg.vocab
    low = min(low, max(3, vocab // 4))
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(low, vocab, (n, length), generator=gen)
    b = torch.randint(low, vocab, (n, length), generator=gen)
    clean = torch.cat([a, a[:, :-1]], 1).tolist()
    corrupted = torch.cat([b, a[:, :-1]], 1).tolist()
    return Task("induction", VERSION, seed, clean, corrupted, [[int(x)] for x in a[:, -1]],
                [[int(x)] for x in b[:, -1]], "logit_diff", [])


CAPITALS = {
    " France": " Paris", " Germany": " Berlin", " Italy": " Rome", " Spain": " Madrid", " Japan": " Tokyo",
    " Russia": " Moscow", " England": " London", " Egypt": " Cairo", " China": " Beijing", " Greece": " Athens",
    " Canada": " Ottawa", " Portugal": " Lisbon", " Austria": " Vienna", " Poland": " Warsaw",
    " Ireland": " Dublin", " Norway": " Oslo", " Sweden": " Stockholm", " Turkey": " Ankara",
    " India": " Delhi", " Kenya": " Nairobi", " Peru": " Lima", " Cuba": " Havana", " Thailand": " Bangkok",
    " Hungary": " Budapest",
}
FACT_TEMPLATES = ["The capital of{X} is", "{X}'s capital city is", "The capital city of{X} is called"]


def factual(model: Model, seed: int = 0) -> Task:
    """Factual recall (country → capital): corrupted = another country of the same token length;
    metric logit(capital) − logit(the other country's capital). Use ``solved_by`` to keep the
    facts the model knows."""
    rng = random.Random(seed)
    pairs = [(c, a) for c, a in CAPITALS.items() if len(token_ids(model, a)) == 1]
    clean, corrupted, good, bad, texts = [], [], [], [], []
    for template in FACT_TEMPLATES:
        for country, capital in pairs:
            text = template.replace("{X}", country)
            ids = _encode(model, text)
            others = [(c, a) for c, a in pairs if c != country and len(_encode(model, template.replace("{X}", c))) == len(ids)]
            if not others:
                continue
            other, other_capital = rng.choice(others)
            clean.append(ids)
            corrupted.append(_encode(model, template.replace("{X}", other)))
            good.append(token_ids(model, capital))
            bad.append(token_ids(model, other_capital))
            texts.append(text)
    return Task("factual", VERSION, seed, clean, corrupted, good, bad, "logit_diff", texts)


TASKS = {"ioi": ioi, "greater-than": greater_than, "induction": induction, "factual": factual}


def make_task(name: str, model: Model, **kwargs) -> Task:
    """A task by name (see ``TASKS``)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name](model, **kwargs)
