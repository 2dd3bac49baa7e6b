"""raspc's program library: every program of Tracr's library, under Tracr's names.

Each function builds the same graph of s-ops as its namesake in Tracr's
``tracr.compiler.lib`` (same primitives, same sharing, same ``.named(...)``
labels), so a compiled model has the same residual labels and the same size.
Only the import changes::

    from raspc import lib           # instead of: from tracr.compiler import lib

    lib.make_hist()("abac")         # -> [2, 1, 2, 1]

The programs before ``make_frac_prevs`` are only meaningful under non-causal
evaluation; ``make_frac_prevs`` and everything after it also work causally.

At the bottom, ``LIBRARY`` maps every function name to a builder of a default
instance (used by the CLI as ``lib:NAME``), ``LIBRARY_DEFAULTS`` describes those
defaults in one line each, and ``LIBRARY_EXAMPLE_VOCAB`` gives the vocabulary
and maximum sequence length each default instance is usually compiled at.
"""

from __future__ import annotations

from typing import Callable, List, Sequence

from raspc import rasp

# --------------------------------------------------------------------------- non-causal programs


def make_length() -> rasp.SOp:
    """The input's length at every position, counted by a selector width.

    Example: ``make_length()("abcd") == [4, 4, 4, 4]``.
    """
    select_everything = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE)
    select_everything = select_everything.named("all_true_selector")
    return rasp.SelectorWidth(select_everything).named("length")


length = make_length()


def make_reverse(sop: rasp.SOp) -> rasp.SOp:
    """`sop` read back to front (position i takes the value at length - 1 - i).

    Example: ``make_reverse(rasp.tokens)("abc") == ["c", "b", "a"]``.
    """
    opp_idx = (length - rasp.indices).named("opp_idx")
    opp_idx = (opp_idx - 1).named("opp_idx-1")
    mirror = rasp.Select(rasp.indices, opp_idx, rasp.Comparison.EQ).named("reverse_selector")
    return rasp.Aggregate(mirror, sop).named("reverse")


def make_pair_balance(sop: rasp.SOp, open_token: str, close_token: str) -> rasp.SOp:
    """Running share of `open_token` minus running share of `close_token` (RASP paper).

    The parentheses in `sop` are balanced iff this never goes negative and ends at 0.

    Example: ``make_pair_balance(rasp.tokens, "(", ")")("(()")``
    == ``[1, 1, 1/3]`` (opens 1, 1, 2/3 minus closes 0, 0, 1/3).
    """
    is_open = rasp.numerical(sop == open_token).named("bools_open")
    open_share = rasp.numerical(make_frac_prevs(is_open)).named("opens")

    is_close = rasp.numerical(sop == close_token).named("bools_close")
    close_share = rasp.numerical(make_frac_prevs(is_close)).named("closes")

    balance = rasp.numerical(rasp.LinearSequenceMap(open_share, close_share, 1, -1))
    return balance.named("pair_balance")


def make_shuffle_dyck(pairs: List[str]) -> rasp.SOp:
    """True everywhere iff every bracket kind in `pairs` is balanced (shuffle-Dyck, RASP paper).

    Each pair is a two-character string: the open token then the close token.

    Example: ``make_shuffle_dyck(["()"])("(())") == [True, True, True, True]`` and
    ``make_shuffle_dyck(["()"])(")(") == [False, False]``.
    """
    assert len(pairs) >= 1

    # One running balance per bracket kind.
    balances = []
    for pair in pairs:
        assert len(pair) == 2
        opener, closer = pair
        balances.append(
            make_pair_balance(rasp.tokens, open_token=opener, close_token=closer).named(f"balance_{pair}")
        )

    # A negative balance anywhere means a close bracket came before its open one.
    any_negative = balances[0] < 0
    for balance in balances[1:]:
        any_negative = any_negative | (balance < 0)
    any_negative = rasp.numerical(rasp.Map(lambda x: x, any_negative)).named("any_negative")

    select_all = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.TRUE).named("select_all")
    has_neg = rasp.numerical(rasp.Aggregate(select_all, any_negative, default=0)).named("has_neg")

    # Every balance must be back at zero on the last position.
    all_zero = balances[0] == 0
    for balance in balances[1:]:
        all_zero = all_zero & (balance == 0)

    select_last = rasp.Select(rasp.indices, length - 1, rasp.Comparison.EQ).named("select_last")
    last_zero = rasp.Aggregate(select_last, all_zero).named("last_zero")

    not_has_neg = (~has_neg).named("not_has_neg")
    return (last_zero & not_has_neg).named("shuffle_dyck")


def make_shuffle_dyck2() -> rasp.SOp:
    """Shuffle-Dyck over round and curly brackets: ``make_shuffle_dyck(["()", "{}"])``.

    Example: ``make_shuffle_dyck2()("({)}") == [True] * 4``; on ``"(){)}"`` all False.
    """
    return make_shuffle_dyck(pairs=["()", "{}"]).named("shuffle_dyck2")


def make_hist() -> rasp.SOp:
    """How often each position's token occurs in the whole input (RASP paper).

    Example: ``make_hist()("abac") == [2, 1, 2, 1]``.
    """
    same_token = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ).named("same_tok")
    return rasp.SelectorWidth(same_token).named("hist")


def make_sort_unique(vals: rasp.SOp, keys: rasp.SOp) -> rasp.SOp:
    """`vals` reordered by ascending `keys`; the keys must be pairwise distinct.

    Each position's target slot is the number of keys smaller than its own.

    Example: ``make_sort_unique(rasp.tokens, rasp.tokens)([3, 1, 2]) == [1, 2, 3]``.
    """
    smaller = rasp.Select(keys, keys, rasp.Comparison.LT).named("smaller")
    target_pos = rasp.SelectorWidth(smaller).named("target_pos")
    move_to_slot = rasp.Select(target_pos, rasp.indices, rasp.Comparison.EQ)
    return rasp.Aggregate(move_to_slot, vals).named("sort")


def make_sort(vals: rasp.SOp, keys: rasp.SOp, *, max_seq_len: int, min_key: float) -> rasp.SOp:
    """`vals` reordered by ascending numeric `keys`, which may repeat.

    Ties are broken by position: key + min_key * index / max_seq_len is unique
    as long as keys differ by at least `min_key`; then ``make_sort_unique`` sorts.

    Example: ``make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1)([2, 4, 1, 2])``
    == ``[1, 2, 2, 4]``.
    """
    unique_keys = rasp.SequenceMap(lambda key, i: key + min_key * i / max_seq_len, keys, rasp.indices)
    return make_sort_unique(vals, unique_keys)


def make_sort_freq(max_seq_len: int) -> rasp.SOp:
    """The tokens, most frequent first; equally frequent tokens keep their input order.

    Example: ``make_sort_freq(max_seq_len=5)([2, 4, 2, 1]) == [2, 2, 4, 1]``.
    """
    hist = -1 * make_hist().named("hist")
    return make_sort(rasp.tokens, hist, max_seq_len=max_seq_len, min_key=1).named("sort_freq")


# --------------------------------------------------------------------------- causal and non-causal programs


def make_frac_prevs(bools: rasp.SOp) -> rasp.SOp:
    """Share of positions up to and including this one where `bools` holds (RASP paper).

    Example: ``make_frac_prevs(rasp.tokens == "l")("hello") == [0, 0, 1/3, 1/2, 2/5]``.
    """
    bools = rasp.numerical(bools)
    up_to_here = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)
    return rasp.numerical(rasp.Aggregate(up_to_here, bools, default=0)).named("frac_prevs")


def shift_by(offset: int, /, sop: rasp.SOp) -> rasp.SOp:
    """`sop` moved `offset` positions to the right; the first `offset` positions are None.

    Example: ``shift_by(1, rasp.tokens)("abc") == [None, "a", "b"]``.
    """
    from_offset_back = rasp.Select(rasp.indices, rasp.indices, lambda k, q: q == k + offset)
    shifted = rasp.Aggregate(from_offset_back, sop, default=None)
    return shifted.named(f"shift_by({offset})")


def make_induction(sop: rasp.SOp = rasp.tokens) -> rasp.SOp:
    """An induction head (A Mathematical Framework for Transformer Circuits): at each position,
    the token that followed an earlier occurrence of the current token ("A B ... A -> B").

    A previous-token head writes `prev_token` (`shift_by(1, sop)`); the induction head's keys read
    it (K-composition) and match it with the current token, among earlier positions, and copy
    the token there. None where the current token has not occurred before. Where it has occurred
    several times with different successors, the evaluator averages them (outside the domain of
    categorical tokens, as for any categorical Aggregate).

    Example: ``make_induction()("abcab") == [None, None, None, "b", "c"]``.
    """
    prev_token = shift_by(1, sop).named("prev_token")
    earlier = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LT).named("earlier")
    # a function, not Comparison.EQ: the first prev_token is None, which equals no token
    follows_same = rasp.Select(prev_token, sop, lambda k, q: k == q).named("follows_same")
    return rasp.Aggregate(follows_same & earlier, sop, default=None).named("induction")


def detect_pattern(sop: rasp.SOp, pattern: Sequence[rasp.Value]) -> rasp.SOp:
    """True where `pattern` ends in `sop`, False elsewhere; None on the first len(pattern)-1 positions.

    Example: ``detect_pattern(rasp.tokens, "abc")("abcabc")``
    == ``[None, None, True, False, False, True]``.
    """
    if len(pattern) < 1:
        raise ValueError(f"Length of `pattern` must be at least 1. Got {pattern}")

    # matches[i] holds at position j iff pattern[-1 - i] is at position j - i.
    matches = []
    for back, element in enumerate(reversed(pattern)):
        match = sop == element
        if back:
            match = shift_by(back, match)
        matches.append(match)

    # And them together, starting from the first element of the pattern.
    found = matches.pop()
    while matches:
        found = found & matches.pop()
    return found.named(f"detect_pattern({pattern})")


def make_count_less_freq(n: int) -> rasp.SOp:
    """At every position: how many tokens of the input occur at most `n` times.

    Example: ``make_count_less_freq(2)(["a", "a", "a", "b", "b", "c"]) == [3] * 6``
    (b, b and c qualify).
    """
    hist = make_hist().named("hist")
    rare = rasp.Select(hist, hist, lambda key, query: key <= n).named("select_less")
    return rasp.SelectorWidth(rare).named("count_less_freq")


def make_count(sop: rasp.SOp, token: rasp.Value) -> rasp.SOp:
    """At every position: how many times `token` occurs in `sop`.

    Example: ``make_count(rasp.tokens, "a")(["c", "a", "b", "a"]) == [2, 2, 2, 2]``.
    """
    is_token = rasp.Select(sop, sop, lambda key, query: key == token)
    return rasp.SelectorWidth(is_token).named(f"count_{token}")


def make_nary_sequencemap(f: Callable[..., rasp.Value], *sops: rasp.SOp) -> rasp.SOp:
    """An n-ary SequenceMap: f(x1, ..., xn) elementwise over n s-ops.

    Binary SequenceMaps pack the arguments into growing tuples, then one Map
    applies `f`. The tuple-valued intermediates are categorical and can make a
    compiled model large.

    Example: ``make_nary_sequencemap(lambda x, y, z: x + y - z, rasp.tokens, rasp.tokens,
    rasp.indices)([3, 2, 2]) == [6, 3, 2]``.
    """
    packed, *rest = sops
    for sop in rest:
        # The first step pairs two plain values; later steps extend a tuple.
        packed = rasp.SequenceMap(
            lambda acc, y: (*acc, y) if isinstance(acc, tuple) else (acc, y), packed, sop
        )
    return rasp.Map(lambda args: f(*args), packed)


# ------------------------------------------------------------------ default instances (CLI `lib:NAME`)

MAX_SEQ_LEN = 5
"""The max_seq_len a default instance is built for when none is given."""

LibraryBuilder = Callable[..., rasp.SOp]
"""``builder(max_seq_len=MAX_SEQ_LEN) -> rasp.SOp``: builds a fresh default instance."""


def _a_flags() -> rasp.SOp:
    return rasp.numerical(rasp.Map(lambda t: 1 if t == "a" else 0, rasp.tokens))


# Every builder accepts the compile's max_seq_len as a keyword (ignored where the
# program does not depend on it) and can also be called with no argument at all.
LIBRARY: dict[str, LibraryBuilder] = {
    "make_length": lambda max_seq_len=MAX_SEQ_LEN: make_length(),
    "make_reverse": lambda max_seq_len=MAX_SEQ_LEN: make_reverse(rasp.tokens),
    "make_pair_balance": lambda max_seq_len=MAX_SEQ_LEN: make_pair_balance(rasp.tokens, "(", ")"),
    "make_shuffle_dyck": lambda max_seq_len=MAX_SEQ_LEN: make_shuffle_dyck(["()"]),
    "make_shuffle_dyck2": lambda max_seq_len=MAX_SEQ_LEN: make_shuffle_dyck2(),
    "make_hist": lambda max_seq_len=MAX_SEQ_LEN: make_hist(),
    "make_sort_unique": lambda max_seq_len=MAX_SEQ_LEN: make_sort_unique(rasp.tokens, rasp.tokens),
    "make_sort": lambda max_seq_len=MAX_SEQ_LEN: make_sort(
        rasp.tokens, rasp.tokens, max_seq_len=max_seq_len, min_key=1
    ),
    "make_sort_freq": lambda max_seq_len=MAX_SEQ_LEN: make_sort_freq(max_seq_len),
    "make_frac_prevs": lambda max_seq_len=MAX_SEQ_LEN: make_frac_prevs(_a_flags()),
    "shift_by": lambda max_seq_len=MAX_SEQ_LEN: shift_by(1, rasp.tokens),
    "detect_pattern": lambda max_seq_len=MAX_SEQ_LEN: detect_pattern(rasp.tokens, "abc"),
    "make_count_less_freq": lambda max_seq_len=MAX_SEQ_LEN: make_count_less_freq(2),
    "make_count": lambda max_seq_len=MAX_SEQ_LEN: make_count(rasp.tokens, "a"),
    "make_nary_sequencemap": lambda max_seq_len=MAX_SEQ_LEN: make_nary_sequencemap(
        lambda x, y, z: x + y - z, rasp.tokens, rasp.tokens, rasp.indices
    ),
    "make_induction": lambda max_seq_len=MAX_SEQ_LEN: make_induction(rasp.tokens),
}

LIBRARY_DEFAULTS: dict[str, str] = {
    "make_length": "make_length()",
    "make_reverse": "make_reverse(tokens)",
    "make_pair_balance": 'make_pair_balance(tokens, "(", ")")',
    "make_shuffle_dyck": 'make_shuffle_dyck(["()"])',
    "make_shuffle_dyck2": 'make_shuffle_dyck2()  (pairs "()" and "{}")',
    "make_hist": "make_hist()",
    "make_sort_unique": "make_sort_unique(tokens, tokens)",
    "make_sort": "make_sort(tokens, tokens, max_seq_len=<compile max_seq_len>, min_key=1)",
    "make_sort_freq": "make_sort_freq(max_seq_len=<compile max_seq_len>)",
    "make_frac_prevs": 'make_frac_prevs(numerical(Map(lambda t: 1 if t == "a" else 0, tokens)))',
    "shift_by": "shift_by(1, tokens)",
    "detect_pattern": 'detect_pattern(tokens, "abc")',
    "make_count_less_freq": "make_count_less_freq(2)",
    "make_count": 'make_count(tokens, "a")',
    "make_nary_sequencemap": "make_nary_sequencemap(lambda x, y, z: x + y - z, tokens, tokens, indices)",
    "make_induction": "make_induction(tokens)",
}

# (vocab, max_seq_len) each default instance is compiled at in shared/tracr-lib-vectors.json.
LIBRARY_EXAMPLE_VOCAB: dict[str, tuple[list[rasp.Value], int]] = {
    "make_length": (["a", "b", "c", "d"], 5),
    "make_reverse": (["a", "b", "c", "d"], 5),
    "make_pair_balance": (["(", ")", "a"], 8),
    "make_shuffle_dyck": (["(", ")"], 8),
    "make_shuffle_dyck2": (["(", ")", "{", "}"], 8),
    "make_hist": (["a", "b", "c", "d"], 5),
    "make_sort_unique": ([1, 2, 3, 4, 5], 5),
    "make_sort": ([1, 2, 3, 4], 5),
    "make_sort_freq": (["a", "b", "c", "d"], 5),
    "make_frac_prevs": (["a", "b", "c", "d", "e"], 8),
    "shift_by": (["a", "b", "c", "d"], 5),
    "detect_pattern": (["a", "b", "c"], 6),
    "make_count_less_freq": (["a", "b", "c", "d"], 6),
    "make_count": (["a", "b", "c"], 8),
    "make_nary_sequencemap": ([1, 2, 3], 5),
    "make_induction": (["a", "b", "c", "d"], 8),
}
