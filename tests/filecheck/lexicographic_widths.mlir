// RUN: raspc-opt %s --split-input-file -p 'lexicographic-widths{min-ratio=0}' | filecheck %s
// (min-ratio=0: rewrite even these tiny keys; by default only keys 4x more than their parts are)

// make_sort's unique keys: x + i / 2 orders (token, index) pairs lexicographically, so counting
// smaller keys is counting smaller tokens plus equal tokens at smaller indices: two widths over
// `tokens` and `indices` alone, added, then the categorical width the program had.
builtin.module {
  rasp.program<vocab = [1, 2], bos = "BOS", pad = "PAD", max_seq_len = 2, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical>
    %key = rasp.sequence_map %tokens, %indices {label = "key", fn = #rasp.table<{1, 0 -> 1.0, 1, 1 -> 1.5, 2, 0 -> 2.0, 2, 1 -> 2.5}>} : !rasp.sop<categorical>, !rasp.sop<categorical> -> !rasp.sop<categorical>
    %smaller = rasp.select %key, %key {label = "smaller", predicate = #rasp<comparison LT>, src = "prog.py:3"} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %pos = rasp.selector_width %smaller {label = "pos"} : !rasp.sop<categorical>
    rasp.output %pos : !rasp.sop<categorical>
  }
}

// CHECK:      %smaller.major = rasp.select %tokens, %tokens {label = "smaller.major", predicate = #rasp.relation<keys = [1, 2], queries = [1, 2], rows = ["00", "10"]>, src = "prog.py:3"}
// CHECK-NEXT: %smaller.tie = rasp.select %tokens, %tokens {label = "smaller.tie", predicate = #rasp.relation<keys = [1, 2], queries = [1, 2], rows = ["10", "01"]>, src = "prog.py:3"}
// CHECK-NEXT: %smaller.minor = rasp.select %indices, %indices {label = "smaller.minor", predicate = #rasp.relation<keys = [0, 1], queries = [0, 1], rows = ["00", "10"]>, src = "prog.py:3"}
// CHECK-NEXT: %smaller.tie_minor = rasp.selector_and %smaller.tie, %smaller.minor
// CHECK-NEXT: %pos.major = rasp.selector_width %smaller.major {label = "pos.major"} : !rasp.sop<numerical, [0, 1]>
// CHECK-NEXT: %pos.tie = rasp.selector_width %smaller.tie_minor {label = "pos.tie"} : !rasp.sop<numerical, [0, 1]>
// CHECK-NEXT: %pos.sum = rasp.linear_sequence_map %pos.major, %pos.tie {label = "pos.sum", fst_fac = 1 : i64, snd_fac = 1 : i64}
// CHECK-NEXT: %pos = rasp.map %pos.sum {label = "pos", fn = #rasp.table<{0 -> 0, 1 -> 1}>} : !rasp.sop<numerical, [0, 1, 2]> -> !rasp.sop<categorical, [0, 1]>
// CHECK-NEXT: rasp.output %pos

// -----

// Index major (key = 2 * i + x with tokens 0 and 1): still lexicographic, with the operands swapped.
builtin.module {
  rasp.program<vocab = [0, 1], bos = "BOS", pad = "PAD", max_seq_len = 2, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical>
    %key = rasp.sequence_map %tokens, %indices {label = "key", fn = #rasp.table<{0, 0 -> 0, 0, 1 -> 2, 1, 0 -> 1, 1, 1 -> 3}>} : !rasp.sop<categorical>, !rasp.sop<categorical> -> !rasp.sop<categorical>
    %larger = rasp.select %key, %key {label = "larger", predicate = #rasp<comparison GEQ>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %n = rasp.selector_width %larger {label = "n"} : !rasp.sop<categorical>
    rasp.output %n : !rasp.sop<categorical>
  }
}

// CHECK:      %larger.major = rasp.select %indices, %indices {label = "larger.major", predicate = #rasp.relation<keys = [0, 1], queries = [0, 1], rows = ["01", "00"]>}
// CHECK:      %larger.minor = rasp.select %tokens, %tokens {label = "larger.minor", predicate = #rasp.relation<keys = [0, 1], queries = [0, 1], rows = ["11", "01"]>}
// CHECK:      %n = rasp.map %n.sum

// -----

// Not lexicographic (x + i collides: 1 + 1 == 2 + 0): left alone.
builtin.module {
  rasp.program<vocab = [1, 2], bos = "BOS", pad = "PAD", max_seq_len = 2, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical>
    %key = rasp.sequence_map %tokens, %indices {label = "key", fn = #rasp.table<{1, 0 -> 1, 1, 1 -> 2, 2, 0 -> 2, 2, 1 -> 3}>} : !rasp.sop<categorical>, !rasp.sop<categorical> -> !rasp.sop<categorical>
    %smaller = rasp.select %key, %key {label = "smaller", predicate = #rasp<comparison LT>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %pos = rasp.selector_width %smaller {label = "pos"} : !rasp.sop<categorical>
    rasp.output %pos : !rasp.sop<categorical>
  }
}

// CHECK:      %smaller = rasp.select %key, %key {label = "smaller", predicate = #rasp<comparison LT>}
// CHECK-NEXT: %pos = rasp.selector_width %smaller {label = "pos"}
