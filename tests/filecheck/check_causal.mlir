// RUN: raspc-opt %s -p combine-selectors,check-causal | filecheck %s

// A causal program: not(select(indices, indices, GT)) folds into LEQ, which never selects a key
// after its query, so check-causal accepts it and leaves the program as it is. prev (a relation
// over indices, None at position 0) and a conjunction with a token selector are causal too.
builtin.module {
  rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 4, causal = true> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical>
    %is_a = rasp.map %tokens {label = "is_a", fn = #rasp.table<{"a" -> 1, "b" -> 0}>} : !rasp.sop<categorical> -> !rasp.sop<numerical>
    %after = rasp.select %indices, %indices {label = "after", predicate = #rasp<comparison GT>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %upto = rasp.selector_not %after {label = "upto", src = "prog.py:3"}
    %frac = rasp.aggregate %upto, %is_a {label = "frac", default = #raspc.value<0>} : !rasp.sop<numerical> -> !rasp.sop<numerical>
    %minus1 = rasp.map %indices {label = "minus1", fn = #rasp.table<{0 -> none, 1 -> 0, 2 -> 1, 3 -> 2}>} : !rasp.sop<categorical> -> !rasp.sop<categorical>
    %prev_sel = rasp.select %indices, %minus1 {label = "prev_sel", predicate = #rasp.relation<keys = [0, 1, 2, 3], queries = [none, 0, 1, 2], rows = ["0000", "1000", "0100", "0010"]>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %same = rasp.select %tokens, %tokens {label = "same", predicate = #rasp<comparison EQ>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %same_before = rasp.selector_and %same, %prev_sel {label = "same_before"}
    %prev = rasp.aggregate %same_before, %tokens {label = "prev", default = #raspc.value<"none">} : !rasp.sop<categorical> -> !rasp.sop<categorical>
    %out = rasp.sequence_map %prev, %frac {label = "out", fn = #rasp.table<{"a", 0.5 -> 1}>} : !rasp.sop<categorical>, !rasp.sop<numerical> -> !rasp.sop<categorical>
    rasp.output %out : !rasp.sop<categorical>
  }
}

// CHECK:      rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 4, causal = true>
// CHECK:      %upto = rasp.select %indices, %indices {label = "upto", predicate = #rasp<comparison LEQ>, src = "prog.py:3"}
// CHECK:      %same_before = rasp.selector_and %same, %prev_sel
// CHECK:      rasp.output %out
