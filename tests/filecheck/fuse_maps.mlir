// RUN: raspc-opt %s -p fuse-maps | filecheck %s

builtin.module attributes {raspc.vocab = #rasp.values<["a", "b"]>, raspc.bos = #rasp.value<"BOS">, raspc.pad = #rasp.value<"PAD">, raspc.max_seq_len = 3 : i64, raspc.causal = false} {
  %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical, [0, 1, 2]>
  %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b"]>
  %all_true_selector = rasp.select %tokens, %tokens {label = "all_true_selector", table = array<i8: 1, 1, 1, 1>, comparison = "TRUE", src = "lib.py:35"} : !rasp.sop<categorical, ["a", "b"]>, !rasp.sop<categorical, ["a", "b"]>
  %length = rasp.selector_width %all_true_selector {label = "length", src = "lib.py:37"} : !rasp.sop<categorical, [1, 2, 3]>
  %opp_idx = rasp.sequence_map %length, %indices {label = "opp_idx", table = array<i64: 2, 1, 0, 3, 2, 1, 4, 3, 2>, src = "lib.py:48"} : !rasp.sop<categorical, [1, 2, 3]>, !rasp.sop<categorical, [0, 1, 2]> -> !rasp.sop<categorical, [-1, 0, 1, 2, 3]>
  %opp_idx-1 = rasp.map %opp_idx {label = "opp_idx-1", table = array<i64: 0, 1, 2, 3, 4>, src = "lib.py:49"} : !rasp.sop<categorical, [-1, 0, 1, 2, 3]> -> !rasp.sop<categorical, [-2, -1, 0, 1, 2]>
  %reverse_selector = rasp.select %indices, %opp_idx-1 {label = "reverse_selector", table = array<i8: 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1>, comparison = "EQ", src = "lib.py:50"} : !rasp.sop<categorical, [0, 1, 2]>, !rasp.sop<categorical, [-2, -1, 0, 1, 2]>
  %reverse = rasp.aggregate %reverse_selector, %tokens {label = "reverse", default = #rasp.value<none>, src = "lib.py:51"} : !rasp.sop<categorical, ["a", "b"]> -> !rasp.sop<categorical, ["a", "b"]>
  rasp.output %reverse : !rasp.sop<categorical, ["a", "b"]>
}

// map(f, sequence_map(g, length, indices)) becomes one sequence_map: one MLP, one layer less.
// CHECK-NOT:  rasp.map
// CHECK:      %opp_idx-1 = rasp.sequence_map %length, %indices {label = "opp_idx-1", table = array<i64: 2, 1, 0, 3, 2, 1, 4, 3, 2>
// CHECK-NEXT: %reverse_selector = rasp.select %indices, %opp_idx-1
