// RUN: raspc-opt %s -p reuse-residual | filecheck %s

// make_hist: the head reads tokens, the MLP right after it writes the output. A head of the same
// attention sublayer erases tokens by attending to its own position (keyed on the position p and p^2
// the pass adds, since indices is not in the residual), so the output takes their dimensions. The
// position directions are erased by that head too, and their dimensions reused.
builtin.module {
  craft.model<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> attributes {layers = 1 : i64, residual = ["one", "bos", "tokens:a", "tokens:b", "hist:1", "hist:2", "hist:3", "hist.bos_share"]} {
    %one = craft.embed {source = "one"} : !craft.num<"one">
    %bos = craft.embed {source = "bos"} : !craft.num<"bos">
    %tokens = craft.embed {source = "tokens"} : !craft.cat<"tokens", ["a", "b"]>
    %hist_share = craft.attention_head q(%tokens, %one : !craft.cat<"tokens", ["a", "b"]>, !craft.num<"one">) k(%tokens, %bos : !craft.cat<"tokens", ["a", "b"]>, !craft.num<"bos">) v(%bos : !craft.num<"bos">) {label = "hist.attn", w_qk = #craft.sparse<["tokens:a" -> "tokens:a" = 1.0, "tokens:b" -> "tokens:b" = 1.0, "one" -> "bos" = 1.0]>, w_ov = #craft.sparse<["bos" -> "hist.bos_share" = 1.0]>, scale = 2.080000e+02 : f64, bos_value = #craft.vec<["hist.bos_share" = 1.0]>, layer = 0 : i64} : !craft.num<"hist.bos_share">
    %hist = craft.mlp %hist_share, %one, %bos {label = "hist", hidden = ["hist[0^>]", "hist[0^<]", "hist[0v>]", "hist[0v<]", "hist[1^>]", "hist[1^<]", "hist[bias]"], w_in = #craft.sparse<["hist.bos_share" -> "hist[0^>]" = 128.0, "hist.bos_share" -> "hist[0^<]" = 128.0, "hist.bos_share" -> "hist[0v>]" = -128.0, "hist.bos_share" -> "hist[0v<]" = -128.0, "hist.bos_share" -> "hist[1^>]" = 64.0, "hist.bos_share" -> "hist[1^<]" = 64.0, "one" -> "hist[bias]" = 1.0, "bos" -> "hist[0^>]" = -94.0, "bos" -> "hist[0^<]" = -93.0, "bos" -> "hist[1^>]" = -41.0, "bos" -> "hist[1^<]" = -40.0, "bos" -> "hist[bias]" = -2.0]>, b_in = #craft.vec<["hist[0^>]" = -35.0, "hist[0^<]" = -36.0, "hist[0v>]" = 40.0, "hist[0v<]" = 39.0, "hist[1^>]" = -24.0, "hist[1^<]" = -25.0]>, w_out = #craft.sparse<["hist[0^>]" -> "hist:3" = -1.0, "hist[0^<]" -> "hist:3" = 1.0, "hist[0v>]" -> "hist:2" = -1.0, "hist[0v<]" -> "hist:2" = 1.0, "hist[1^>]" -> "hist:1" = 1.0, "hist[1^>]" -> "hist:2" = -1.0, "hist[1^<]" -> "hist:1" = -1.0, "hist[1^<]" -> "hist:2" = 1.0, "hist[bias]" -> "hist:2" = 1.0, "hist[bias]" -> "hist:3" = 1.0]>, layer = 0 : i64} : (!craft.num<"hist.bos_share">, !craft.num<"one">, !craft.num<"bos">) -> !craft.cat<"hist", [1, 2, 3]>
    craft.output %hist : !craft.cat<"hist", [1, 2, 3]>
  }
}


// CHECK: residual = ["one", "bos", "tokens:a", "tokens:b", "hist:1", "hist:2", "hist:3", "hist.bos_share", "positions", "positions_sq"], dims = array<i64: 2, 3, 4, 5, 0, 1, 4, 6, 0, 1>}
// CHECK-NEXT: %positions = craft.positional {label = "positions", values = #raspc.values<[1, 2, 3]>} : !craft.num<"positions">
// CHECK-NEXT: %positions_sq = craft.positional {label = "positions_sq", values = #raspc.values<[1, 4, 9]>} : !craft.num<"positions_sq">
// CHECK:      craft.erase %tokens : !craft.cat<"tokens", ["a", "b"]> by %positions, %positions_sq, %one : !craft.num<"positions">, !craft.num<"positions_sq">, !craft.num<"one"> {layer = 0 : i64}
// CHECK-NEXT: %hist = craft.mlp
