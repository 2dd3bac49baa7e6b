// RUN: raspc-opt %s -p fuse-maps,lower-rasp-to-craft,allocate-layers,layout-residual | filecheck %s

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

// The residual layout: one, bos, tokens, indices first, then the other spaces by label.
// CHECK:      raspc.residual_labels = ["one", "bos", "tokens:a", "tokens:b", "indices:0", "indices:1", "indices:2", "length:1", "length:2", "length:3", "length.bos_share",
// Selector width: BOS scores level with a match, the head writes BOS's share of attention.
// CHECK:      %length_share = craft.attention_head q(%tokens, %one
// CHECK-SAME: "tokens:a" -> "tokens:a" = 1.0, "tokens:a" -> "tokens:b" = 1.0
// CHECK-SAME: "one" -> "bos" = 1.0
// CHECK-SAME: w_ov = #craft.sparse<["bos" -> "length.bos_share" = 1.0]>
// CHECK-SAME: layer = 0 : i64
// CHECK:      %length = craft.mlp %length_share, %one, %bos
// CHECK-SAME: layer = 0 : i64
// CHECK:      %opp_idx-1 = craft.mlp %length, %indices
// CHECK-SAME: layer = 1 : i64
// Select + aggregate: one head; a match scores 1, BOS 1/2 (empty selection -> BOS -> None).
// CHECK:      %reverse = craft.attention_head q(%opp_idx-1, %one
// CHECK-SAME: "opp_idx-1:0" -> "indices:0" = 1.0
// CHECK-SAME: "one" -> "bos" = 0.5
// CHECK-SAME: w_ov = #craft.sparse<["tokens:a" -> "reverse:a" = 1.0, "tokens:b" -> "reverse:b" = 1.0]>
// CHECK-SAME: layer = 2 : i64
// CHECK:      craft.output %reverse
