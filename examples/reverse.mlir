// make_reverse written by hand at the rasp level, without value sets: infer-value-sets fills them.
// raspc-opt examples/reverse.mlir -p "$(raspc passes --default),export-onnx{output=\"reverse.onnx\"}"
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
