// RUN: raspc-opt %s --split-input-file -p product-selectors | filecheck %s

// before (indices) or same (tokens): no head scores an `or` of different keys, so it becomes one
// select over (index, token) tuples, packed by a rasp.tuple; its relation is the `or` on every
// pair of tuples. Keys and queries pack the same s-ops, so they share one pack.
builtin.module {
  rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 2, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical>
    %before = rasp.select %indices, %indices {label = "before", predicate = #rasp<comparison LT>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %same = rasp.select %tokens, %tokens {label = "same", predicate = #rasp<comparison EQ>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %either = rasp.selector_or %before, %same {label = "either", src = "prog.py:4"}
    %width = rasp.selector_width %either {label = "width"} : !rasp.sop<categorical>
    rasp.output %width : !rasp.sop<categorical>
  }
}

// CHECK-NOT:  rasp.selector_or
// CHECK:      %either.keys = rasp.tuple %indices, %tokens {label = "either.keys", src = "prog.py:4"}
// CHECK-SAME: -> !rasp.sop<categorical, [(0, "a"), (0, "b"), (1, "a"), (1, "b")]>
// CHECK-NEXT: %either = rasp.select %either.keys, %either.keys {label = "either", predicate = #rasp.relation<keys = [(0, "a"), (0, "b"), (1, "a"), (1, "b")], queries = [(0, "a"), (0, "b"), (1, "a"), (1, "b")], rows = ["1010", "0101", "1110", "1101"]>, src = "prog.py:4"}
// CHECK-NEXT: %width = rasp.selector_width %either {label = "width"} : !rasp.sop<categorical, [1, 2]>
// CHECK-NOT:  rasp.selector_or

// -----

// Three key s-ops pack into one rasp.tuple of triples; a part that can be None keeps its None
// as a value of the tuple ((0, 0, none)), so a select on that None still sees it.
builtin.module {
  rasp.program<vocab = [0, 1], bos = "BOS", pad = "PAD", max_seq_len = 2, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical>
    %at_token = rasp.select %indices, %tokens {label = "at_token", predicate = #rasp<comparison EQ>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %maybe = rasp.aggregate %at_token, %tokens {label = "maybe", default = #raspc.value<none>} : !rasp.sop<categorical> -> !rasp.sop<categorical>
    %before = rasp.select %indices, %indices {label = "before", predicate = #rasp<comparison LT>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %same = rasp.select %tokens, %tokens {label = "same", predicate = #rasp<comparison EQ>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %equal = rasp.select %maybe, %maybe {label = "equal", predicate = #rasp<comparison EQ>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %a = rasp.selector_or %before, %same {label = "a"}
    %any3 = rasp.selector_not %a {label = "any3"}
    %any3b = rasp.selector_and %any3, %equal {label = "any3b", src = "prog.py:9"}
    %mean = rasp.aggregate %any3b, %tokens {label = "mean", default = #raspc.value<none>} : !rasp.sop<categorical> -> !rasp.sop<categorical>
    rasp.output %mean : !rasp.sop<categorical>
  }
}

// CHECK:      %any3b.keys = rasp.tuple %indices, %tokens, %maybe {label = "any3b.keys", src = "prog.py:9"}
// CHECK-SAME: -> !rasp.sop<categorical, [(0, 0, none), (0, 0, 0), (0, 0, 1), (0, 1, none), (0, 1, 0), (0, 1, 1), (1, 0, none), (1, 0, 0), (1, 0, 1), (1, 1, none), (1, 1, 0), (1, 1, 1)]>
// CHECK-NEXT: %any3b = rasp.select %any3b.keys, %any3b.keys {label = "any3b", predicate = #rasp.relation<keys = [(0, 0, none), (0, 0, 0),
// CHECK-NEXT: %mean = rasp.aggregate %any3b, %tokens
