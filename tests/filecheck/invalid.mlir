// RUN: raspc-opt %s --split-input-file --verify-diagnostics | filecheck %s

rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
  %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b"]>
  %double = rasp.map %tokens {label = "double", fn = #rasp.table<{"a", "a" -> 1}>} : !rasp.sop<categorical, ["a", "b"]> -> !rasp.sop<categorical>
  rasp.output %double : !rasp.sop<categorical>
}
// CHECK: rasp.map takes a table of one argument

// -----

rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
  %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b"]>
}
// CHECK: Operation rasp.tokens terminates block in single-block region but is not a terminator

// -----

rasp.program<vocab = ["a", "a"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
  %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
  rasp.output %tokens : !rasp.sop<categorical>
}
// CHECK: bad model input: the vocabulary has duplicate tokens

// -----

rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
  %i = rasp.indices {label = "indices"} : !rasp.sop<numerical, [0, 1, 2]>
  %lin = rasp.linear_sequence_map %i, %i {label = "lin", fst_fac = 1 : i64, snd_fac = 1 : i64} : !rasp.sop<numerical, [0, 1, 2]>, !rasp.sop<numerical, [0, 1, 2]> -> !rasp.sop<categorical>
  rasp.output %lin : !rasp.sop<categorical>
}
// CHECK: rasp.linear_sequence_map works on numerical s-ops

// -----

craft.model<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
  %one = craft.embed {source = "one"} : !craft.num<"one">
  %x = craft.mlp %one {label = "x", hidden = ["h"], w_in = #craft.sparse<["tokens:a" -> "h" = 1.0]>, b_in = #craft.vec<[]>, w_out = #craft.sparse<["h" -> "x" = 1.0]>} : (!craft.num<"one">) -> !craft.num<"x">
  craft.output %x : !craft.num<"x">
}
// CHECK: w_in rows uses directions not in its spaces: ['tokens:a']
