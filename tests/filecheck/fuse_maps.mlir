// RUN: raspc-opt %s --split-input-file -p fuse-maps | filecheck %s

// make_reverse: map(f, sequence_map(g, length, indices)) becomes one sequence_map: one MLP, one layer less.
builtin.module {
  rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical, [0, 1, 2]>
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b"]>
    %all_true_selector = rasp.select %tokens, %tokens {label = "all_true_selector", predicate = #rasp<comparison TRUE>, src = "lib.py:35"} : !rasp.sop<categorical, ["a", "b"]>, !rasp.sop<categorical, ["a", "b"]>
    %length = rasp.selector_width %all_true_selector {label = "length", src = "lib.py:37"} : !rasp.sop<categorical, [1, 2, 3]>
    %opp_idx = rasp.sequence_map %length, %indices {label = "opp_idx", fn = #rasp.table<{1, 0 -> 1, 1, 1 -> 0, 1, 2 -> -1, 2, 0 -> 2, 2, 1 -> 1, 2, 2 -> 0, 3, 0 -> 3, 3, 1 -> 2, 3, 2 -> 1}>, src = "lib.py:48"} : !rasp.sop<categorical, [1, 2, 3]>, !rasp.sop<categorical, [0, 1, 2]> -> !rasp.sop<categorical, [-1, 0, 1, 2, 3]>
    %opp_idx-1 = rasp.map %opp_idx {label = "opp_idx-1", fn = #rasp.table<{-1 -> -2, 0 -> -1, 1 -> 0, 2 -> 1, 3 -> 2}>, src = "lib.py:49"} : !rasp.sop<categorical, [-1, 0, 1, 2, 3]> -> !rasp.sop<categorical, [-2, -1, 0, 1, 2]>
    %reverse_selector = rasp.select %indices, %opp_idx-1 {label = "reverse_selector", predicate = #rasp<comparison EQ>, src = "lib.py:50"} : !rasp.sop<categorical, [0, 1, 2]>, !rasp.sop<categorical, [-2, -1, 0, 1, 2]>
    %reverse = rasp.aggregate %reverse_selector, %tokens {label = "reverse", default = #raspc.value<none>, src = "lib.py:51"} : !rasp.sop<categorical, ["a", "b"]> -> !rasp.sop<categorical, [none, "a", "b"]>
    rasp.output %reverse : !rasp.sop<categorical, [none, "a", "b"]>
  }
}

// CHECK-NOT:  rasp.map
// CHECK:      %opp_idx-1 = rasp.sequence_map %length, %indices {label = "opp_idx-1", fn = #rasp.table<{1, 0 -> 0, 1, 1 -> -1, 1, 2 -> -2, 2, 0 -> 1, 2, 1 -> 0, 2, 2 -> -1, 3, 0 -> 2, 3, 1 -> 1, 3, 2 -> 0}>, src = "lib.py:49"}
// CHECK-SAME: -> !rasp.sop<categorical, [-2, -1, 0, 1, 2]>
// CHECK-NEXT: %reverse_selector = rasp.select %indices, %opp_idx-1

// -----

// map(f, map(g, x)): where g gives None, f is not called (None); where g or f has no entry (the
// function raises), the composite has none either. The fused op's value set is re-inferred.
builtin.module {
  rasp.program<vocab = ["a", "b", "c", "d"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b", "c", "d"]>
    %g = rasp.map %tokens {label = "g", fn = #rasp.table<{"a" -> none, "b" -> 1, "c" -> 2}>} : !rasp.sop<categorical, ["a", "b", "c", "d"]> -> !rasp.sop<categorical, [none, 1, 2]>
    %f = rasp.map %g {label = "f", fn = #rasp.table<{1 -> "one", 3 -> "three"}>, src = "prog.py:2"} : !rasp.sop<categorical, [none, 1, 2]> -> !rasp.sop<categorical, [none, "one", "three"]>
    rasp.output %f : !rasp.sop<categorical, [none, "one", "three"]>
  }
}

// CHECK:      %f = rasp.map %tokens {label = "f", fn = #rasp.table<{"a" -> none, "b" -> "one"}>, src = "prog.py:2"} : !rasp.sop<categorical, ["a", "b", "c", "d"]> -> !rasp.sop<categorical, [none, "one"]>
// CHECK-NEXT: rasp.output %f

// -----

// sequence_map(f, map(g, x), y) reads x when the table grows at most max-growth (2) times: here
// 4 tokens -> 2 values. A map read twice is not fused (its MLP would be paid twice).
builtin.module {
  rasp.program<vocab = ["a", "b", "c", "d"], bos = "BOS", pad = "PAD", max_seq_len = 2, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b", "c", "d"]>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical, [0, 1]>
    %is_ab = rasp.map %tokens {label = "is_ab", fn = #rasp.table<{"a" -> true, "b" -> true, "c" -> false, "d" -> false}>} : !rasp.sop<categorical, ["a", "b", "c", "d"]> -> !rasp.sop<categorical, [false, true]>
    %tag = rasp.sequence_map %is_ab, %indices {label = "tag", fn = #rasp.table<{false, 0 -> 0, false, 1 -> 1, true, 0 -> 2, true, 1 -> 3}>} : !rasp.sop<categorical, [false, true]>, !rasp.sop<categorical, [0, 1]> -> !rasp.sop<categorical, [0, 1, 2, 3]>
    %twice = rasp.map %indices {label = "twice", fn = #rasp.table<{0 -> 0, 1 -> 2}>} : !rasp.sop<categorical, [0, 1]> -> !rasp.sop<categorical, [0, 2]>
    %sum = rasp.sequence_map %tag, %twice {label = "sum", fn = #rasp.table<{0, 0 -> 0, 0, 2 -> 2, 1, 0 -> 1, 1, 2 -> 3, 2, 0 -> 2, 2, 2 -> 4, 3, 0 -> 3, 3, 2 -> 5}>} : !rasp.sop<categorical, [0, 1, 2, 3]>, !rasp.sop<categorical, [0, 2]> -> !rasp.sop<categorical, [0, 1, 2, 3, 4, 5]>
    %out = rasp.sequence_map %sum, %twice {label = "out", fn = #rasp.table<{0, 0 -> 0, 1, 0 -> 1, 2, 0 -> 2, 3, 0 -> 3, 4, 0 -> 4, 5, 0 -> 5, 0, 2 -> 0, 1, 2 -> 1, 2, 2 -> 2, 3, 2 -> 3, 4, 2 -> 4, 5, 2 -> 5}>} : !rasp.sop<categorical, [0, 1, 2, 3, 4, 5]>, !rasp.sop<categorical, [0, 2]> -> !rasp.sop<categorical, [0, 1, 2, 3, 4, 5]>
    rasp.output %out : !rasp.sop<categorical, [0, 1, 2, 3, 4, 5]>
  }
}

// CHECK-NOT:  %is_ab
// CHECK:      %tag = rasp.sequence_map %tokens, %indices {label = "tag", fn = #rasp.table<{"a", 0 -> 2, "a", 1 -> 3, "b", 0 -> 2, "b", 1 -> 3, "c", 0 -> 0, "c", 1 -> 1, "d", 0 -> 0, "d", 1 -> 1}>}
// CHECK-NEXT: %twice = rasp.map %indices
// CHECK-NEXT: %sum = rasp.sequence_map %tag, %twice
