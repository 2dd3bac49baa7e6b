"""A program file for the CLI: `raspc compile examples/my_program.py:make_program --vocab a,b,c --max-seq-len 6 -o m.onnx`.

The function returns an s-op; it may take `max_seq_len` (the CLI passes it).
"""

from raspc import lib, rasp


def make_program(max_seq_len: int = 6) -> rasp.SOp:
    """For each position: how many tokens so far were the same as this one (a causal-safe running count)."""
    prevs = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ).named("prevs")
    same = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ).named("same")
    return rasp.SelectorWidth(prevs & same).named("running_count")


def make_previous_upper() -> rasp.SOp:
    """The previous token, upper-cased; None at the first position (None flows through the Map)."""
    shifted = lib.shift_by(1, rasp.tokens)
    return rasp.Map(lambda t: t.upper(), shifted).named("prev_upper")
