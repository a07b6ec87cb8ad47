"""Example programs (tracr's library, and two of mechscope's own that chain three or more steps).

Each ``make_*`` returns a fresh program (new SOps, its own labels). ``PROGRAMS`` lists them with the
vocabulary and length they are compiled for and whether they need non-causal attention (reading
later positions): reverse, sort and histogram do; frac_prevs and paren_depth do not.
"""

from __future__ import annotations

from .rasp import Aggregate, Comparison, Map, Select, SelectorWidth, SequenceMap, SOp, indices, tokens


def make_length() -> SOp:
    """The input's length at every position."""
    return SelectorWidth(Select(tokens, tokens, Comparison.TRUE, label="all"), label="length")


def make_reverse() -> SOp:
    """The input reversed: position i reads position length − i − 1."""
    length = make_length()
    opp = SequenceMap(lambda n, i: n - i - 1, length, indices, label="opp_index")
    flip = Select(indices, opp, Comparison.EQ, label="flip")
    return Aggregate(flip, tokens, label="reverse")


def make_histogram() -> SOp:
    """How often each position's token occurs in the input."""
    return SelectorWidth(Select(tokens, tokens, Comparison.EQ, label="same_token"), label="histogram")


def make_sort_unique() -> SOp:
    """The tokens sorted ascending (tokens must be distinct): position i reads the token with i smaller ones."""
    smaller = Select(tokens, tokens, Comparison.LT, label="smaller")
    target = SelectorWidth(smaller, label="target_pos")
    return Aggregate(Select(target, indices, Comparison.EQ, label="sort_select"), tokens, label="sort")


def make_frac_prevs(token: str = "x") -> SOp:
    """The fraction of positions so far (this one included) holding ``token`` (numerical)."""
    is_token = Map(lambda t: 1 if t == token else 0, tokens, numerical=True, label=f"is_{token}")
    prevs = Select(indices, indices, Comparison.LEQ, label="prevs")
    return Aggregate(prevs, is_token, numerical=True, label="frac_prevs")


def make_paren_depth(max_len: int) -> SOp:
    """Nesting depth after each position of a string of '(' and ')': opens so far − closes so far.
    Mechscope's own, five steps: mark each bracket's position, count each kind up to here, subtract."""
    far = max_len  # an index no query reaches: positions holding the other bracket are never selected
    open_at = SequenceMap(lambda t, i: i if t == "(" else far, tokens, indices, label="open_at")
    close_at = SequenceMap(lambda t, i: i if t == ")" else far, tokens, indices, label="close_at")
    opens = SelectorWidth(Select(open_at, indices, Comparison.LEQ, label="opens_so_far"), label="n_open")
    closes = SelectorWidth(Select(close_at, indices, Comparison.LEQ, label="closes_so_far"), label="n_close")
    return SequenceMap(lambda a, b: a - b, opens, closes, label="depth")


def make_mirror_match() -> SOp:
    """1 where a token equals its mirror image's (the token length − i − 1), else 0 — a palindrome
    test per position. Mechscope's own: length, mirror index, a read of the mirror, a comparison."""
    length = make_length()
    opp = SequenceMap(lambda n, i: n - i - 1, length, indices, label="mirror_index")
    mirrored = Aggregate(Select(indices, opp, Comparison.EQ, label="mirror"), tokens, label="mirrored")
    return SequenceMap(lambda a, b: int(a == b), tokens, mirrored, label="mirror_match")


PROGRAMS = {  # name: (maker, vocab, max_len, needs non-causal attention)
    "length": (make_length, ["a", "b", "c"], 5, True),
    "reverse": (make_reverse, ["a", "b", "c"], 5, True),
    "histogram": (make_histogram, ["a", "b", "c"], 5, True),
    "sort": (make_sort_unique, [1, 2, 3, 4, 5], 5, True),
    "frac_prevs": (make_frac_prevs, ["x", "y"], 6, False),
    "paren_depth": (lambda: make_paren_depth(8), ["(", ")"], 8, False),
    "mirror_match": (make_mirror_match, ["a", "b"], 6, True),
}
