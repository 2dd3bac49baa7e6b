// RUN: raspc-opt %s -p infer-value-sets,lower-rasp-to-craft | filecheck %s

// make_reverse written by hand: no value sets in the types (infer-value-sets fills them), then lowered.
builtin.module {
  rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical>
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %all = rasp.select %tokens, %tokens {label = "all", predicate = #rasp<comparison TRUE>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %length = rasp.selector_width %all {label = "length"} : !rasp.sop<categorical>
    %opp = rasp.sequence_map %length, %indices {label = "opp", fn = #rasp.table<{1, 0 -> 0, 1, 1 -> -1, 1, 2 -> -2, 2, 0 -> 1, 2, 1 -> 0, 2, 2 -> -1, 3, 0 -> 2, 3, 1 -> 1, 3, 2 -> 0}>} : !rasp.sop<categorical>, !rasp.sop<categorical> -> !rasp.sop<categorical>
    %flip = rasp.select %indices, %opp {label = "flip", predicate = #rasp<comparison EQ>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %reverse = rasp.aggregate %flip, %tokens {label = "reverse", default = #raspc.value<none>} : !rasp.sop<categorical> -> !rasp.sop<categorical>
    rasp.output %reverse : !rasp.sop<categorical>
  }
}

// Embeddings for what the program reads; `one` and `bos` for the heads and gates.
// CHECK:      craft.model<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
// CHECK:      %one = craft.embed {source = "one"} : !craft.num<"one">
// CHECK-NEXT: %bos = craft.embed {source = "bos"} : !craft.num<"bos">
// CHECK:      %indices = craft.embed {source = "indices"} : !craft.cat<"indices", [0, 1, 2]>
// CHECK:      %tokens = craft.embed {source = "tokens"} : !craft.cat<"tokens", ["a", "b"]>
// Selector width: BOS scores level with a match and receives 1/(w+1) of the attention.
// CHECK:      %length_share = craft.attention_head q(%tokens, %one
// CHECK-SAME: "one" -> "bos" = 1.0
// CHECK-SAME: w_ov = #craft.sparse<["bos" -> "length.bos_share" = 1.0]>
// CHECK-SAME: bos_value = #craft.vec<["length.bos_share" = 1.0]>
// CHECK:      %length = craft.mlp %length_share, %one, %bos
// CHECK-SAME: -> !craft.cat<"length", [1, 2, 3]>
// The sequence map: one unit per (length value, output) pair.
// CHECK:      %opp = craft.mlp %length, %indices
// CHECK-SAME: "opp[length:1->opp:0]"
// CHECK-SAME: -> !craft.cat<"opp", [-2, -1, 0, 1, 2]>
// Select + aggregate: a match scores 1, BOS 1/2 (an empty selection attends to BOS: None).
// CHECK:      %reverse = craft.attention_head q(%opp, %one
// CHECK-SAME: k(%indices, %bos
// CHECK-SAME: "opp:0" -> "indices:0" = 1.0, "opp:1" -> "indices:1" = 1.0, "opp:2" -> "indices:2" = 1.0, "one" -> "bos" = 0.5
// CHECK-SAME: w_ov = #craft.sparse<["tokens:a" -> "reverse:a" = 1.0, "tokens:b" -> "reverse:b" = 1.0]>
// CHECK-SAME: bos_value = #craft.vec<[]>
// CHECK:      craft.output %reverse : !craft.cat<"reverse", ["a", "b"]>
// CHECK-NOT:  rasp.
