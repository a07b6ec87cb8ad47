"""Datasets of labelled prompts for probes and contrast pairs for steering: sentiment words in
templates, true and false statements, function words in running text."""

from __future__ import annotations

from dataclasses import dataclass

import torch

@dataclass
class ProbeDataset:
    """Labelled prompts (strings or token-id lists). ``groups``: what must not be split across
    train and test (a template, a word); ``types``: what the control task labels (None: the token
    at the probed position); ``position``: which token is probed (-1 = last real token)."""

    name: str
    prompts: list
    labels: list[float]
    groups: list[str]
    types: list[str] | None = None
    position: int = -1

    def __post_init__(self):
        n = len(self.prompts)
        if not n or len(self.labels) != n or len(self.groups) != n or (self.types is not None and len(self.types) != n):
            raise ValueError(f"dataset {self.name!r}: prompts, labels, groups (and types) need one entry each; "
                             f"got {n}, {len(self.labels)}, {len(self.groups)}")


POSITIVE = ["wonderful", "great", "excellent", "delightful", "lovely", "fantastic", "superb", "beautiful", "brilliant",
            "charming", "pleasant", "marvelous", "amazing", "perfect", "joyful", "fun", "good", "happy", "nice", "glorious"]
NEGATIVE = ["terrible", "awful", "horrible", "dreadful", "boring", "disgusting", "miserable", "poor", "bad", "nasty",
            "ugly", "painful", "annoying", "tedious", "sad", "gloomy", "lousy", "unpleasant", "disappointing", "dull"]
_TEMPLATES = ["The movie was {}.", "I thought the meal was {}.", "Honestly, the concert felt {}.",
              "My week at the beach was {}.", "Their new song is {}.", "The hotel room looked {}.",
              "Overall the book was {}.", "Today the weather is {}."]
# a wider lexicon for scoring generated text (``steering.word_score``); the probe datasets use the
# 20 + 20 adjectives above
POSITIVE_WORDS = POSITIVE + ["love", "loved", "enjoy", "enjoyed", "excited", "delicious", "best", "thrilled", "smile",
                             "smiled", "laugh", "laughed", "fantastic", "awesome", "grateful", "peaceful", "proud",
                             "exciting", "favorite", "favourite", "friendly", "warm", "kind", "success", "successful",
                             "win", "won", "hope", "glad", "fun", "relaxing", "incredible", "enjoyable", "cheerful"]
NEGATIVE_WORDS = NEGATIVE + ["hate", "hated", "angry", "worst", "cry", "cried", "fear", "afraid", "scared", "sick",
                             "broken", "lonely", "pain", "hurt", "fail", "failed", "failure", "worried", "worry",
                             "upset", "stupid", "useless", "cold", "rude", "wrong", "lost", "dead", "death", "problem",
                             "problems", "unfortunately", "disappointed", "frustrated", "boring", "mess"]
CAPITALS = {"France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
            "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo", "Canada": "Ottawa", "Greece": "Athens",
            "Portugal": "Lisbon", "Austria": "Vienna", "Poland": "Warsaw", "Norway": "Oslo", "Sweden": "Stockholm",
            "Ireland": "Dublin", "Kenya": "Nairobi", "Peru": "Lima", "Cuba": "Havana", "Thailand": "Bangkok",
            "England": "London", "Hungary": "Budapest", "Finland": "Helsinki", "Denmark": "Copenhagen"}


def sentiment_dataset() -> ProbeDataset:
    """Positive vs negative adjectives in 8 templates (320 prompts); groups and control types =
    the adjective, so test adjectives are never seen in training; probed at the adjective (the
    token before '.')."""
    prompts, labels, groups = [], [], []
    for label, words in ((1.0, POSITIVE), (0.0, NEGATIVE)):
        for w in words:
            for t in _TEMPLATES:
                prompts.append(t.format(w))
                labels.append(label)
                groups.append(w)
    return ProbeDataset("sentiment", prompts, labels, groups, types=list(groups), position=-2)


def truth_dataset(seed: int = 0) -> ProbeDataset:
    """Capital-city statements in 2 phrasings, true with the country's capital and false with
    another's (96 statements); groups = the country; control types = the city named (cities recur
    across countries as false answers, so a probe could memorise them); probed at the final '.'."""
    g = torch.Generator().manual_seed(seed)
    countries = list(CAPITALS)
    prompts, labels, groups, types = [], [], [], []
    for i, c in enumerate(countries):
        shift = 1 + int(torch.randint(0, len(countries) - 1, (1,), generator=g))
        wrong = CAPITALS[countries[(i + shift) % len(countries)]]
        for city, label in ((CAPITALS[c], 1.0), (wrong, 0.0)):
            for text in (f"The capital of {c} is {city}.", f"{city} is the capital of {c}."):
                prompts.append(text)
                labels.append(label)
                groups.append(c)
                types.append(city)
    return ProbeDataset("truth", prompts, labels, groups, types=types, position=-1)


FUNCTION_WORDS = set("""the a an of to and in that is it for with as on at by from this be are was were or but not no nor
his her my your their our its he she they we you i me him them us if so all any some there what which who whom whose
when where how than then thou thee thy thine ye hath doth shall will would should may might must can could do does did
have has had am been being into upon unto o up out too very yet these those such each every both either neither""".split())


def function_word_dataset(tokenizer, n_blocks: int = 100, per_block: int = 4, length: int = 24,
                          seed: int = 0) -> ProbeDataset:
    """A part-of-speech-like token task on the embedded corpus: is the word just read a function
    word (closed class: determiners, pronouns, prepositions, auxiliaries, conjunctions — a fixed
    list) or a content word? Each example is a corpus prefix (token ids) ending at a whole word
    (one token, after a space); groups = the corpus block (no context on both sides); control
    types = the word — words recur across blocks, so a probe that memorises words scores on the
    control task too, which is what selectivity corrects for (Hewitt & Liang's point)."""
    from ..data import token_blocks

    blocks = token_blocks(tokenizer, n_blocks, length)
    g = torch.Generator().manual_seed(seed)
    prompts, labels, groups, types = [], [], [], []
    for b, row in enumerate(blocks.tolist()):
        cands = []
        for p in range(4, length - 1):
            text = tokenizer.decode([row[p]])
            nxt = tokenizer.decode([row[p + 1]])
            word = text.strip().lower()
            if text.startswith(" ") and word.isalpha() and not nxt[:1].isalpha():  # a whole word
                cands.append((p, word))
        for k in torch.randperm(len(cands), generator=g)[:per_block].tolist():
            p, word = cands[k]
            prompts.append(row[:p + 1])
            labels.append(1.0 if word in FUNCTION_WORDS else 0.0)
            groups.append(f"block{b}")
            types.append(word)
    return ProbeDataset("function-words", prompts, labels, groups, types=types, position=-1)


DATASETS = {"sentiment": lambda model: sentiment_dataset(), "truth": lambda model: truth_dataset(),
            "function-words": lambda model: function_word_dataset(model.tokenizer)}
