// RUN: raspc-opt %s --split-input-file --verify-diagnostics | filecheck %s

builtin.module attributes {raspc.vocab = #rasp.values<["a", "b"]>, raspc.bos = #rasp.value<"BOS">, raspc.pad = #rasp.value<"PAD">, raspc.max_seq_len = 3 : i64, raspc.causal = false} {
  %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b"]>
  %same = rasp.select %tokens, %tokens {label = "same", table = array<i8: 1, 0, 1>} : !rasp.sop<categorical, ["a", "b"]>, !rasp.sop<categorical, ["a", "b"]>
}
// CHECK: table has 3 entries, expected |queries| x |keys| = 2 x 2

// -----

builtin.module {
  %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["b", "a"]>
}
// CHECK: value set must be sorted and without duplicates

// -----

builtin.module {
  %one = craft.embed {source = "one"} : !craft.num<"one">
  %x = craft.mlp %one {label = "x", hidden = ["h"], w_in = #craft.sparse<["tokens:a" -> "h" = 1.0]>, b_in = #craft.vec<[]>, w_out = #craft.sparse<["h" -> "x" = 1.0]>} : (!craft.num<"one">) -> !craft.num<"x">
}
// CHECK: w_in rows uses directions not in its spaces: ['tokens:a']
