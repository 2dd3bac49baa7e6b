// RUN: raspc-opt %s --split-input-file -p combine-selectors | filecheck %s

// not(select(k, q, LT)) folds into one select with the negated comparison; it keeps the not's name.
builtin.module {
  rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b"]>
    %lt = rasp.select %tokens, %tokens {label = "lt", predicate = #rasp<comparison LT>, src = "prog.py:3"} : !rasp.sop<categorical, ["a", "b"]>, !rasp.sop<categorical, ["a", "b"]>
    %not_lt = rasp.selector_not %lt {label = "not_lt", src = "prog.py:4"}
    %width = rasp.selector_width %not_lt {label = "width", src = "prog.py:4"} : !rasp.sop<categorical, [0, 1, 2, 3]>
    rasp.output %width : !rasp.sop<categorical, [0, 1, 2, 3]>
  }
}

// CHECK-NOT:  rasp.selector_not
// CHECK:      %not_lt = rasp.select %tokens, %tokens {label = "not_lt", predicate = #rasp<comparison GEQ>, src = "prog.py:4"}
// The select always selects its own position now: the width's value set is re-inferred.
// CHECK-NEXT: %width = rasp.selector_width %not_lt {label = "width", src = "prog.py:4"} : !rasp.sop<categorical, [1, 2, 3]>

// -----

// De Morgan: not(before and same) = not before or not same, and each not folds into its select.
builtin.module {
  rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b"]>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical, [0, 1, 2]>
    %before = rasp.select %indices, %indices {label = "before", predicate = #rasp<comparison LT>} : !rasp.sop<categorical, [0, 1, 2]>, !rasp.sop<categorical, [0, 1, 2]>
    %same = rasp.select %tokens, %tokens {label = "same", predicate = #rasp<comparison EQ>} : !rasp.sop<categorical, ["a", "b"]>, !rasp.sop<categorical, ["a", "b"]>
    %both = rasp.selector_and %before, %same {label = "both"}
    %neither = rasp.selector_not %both {label = "neither", src = "prog.py:8"}
    %width = rasp.selector_width %neither {label = "width"} : !rasp.sop<categorical, [0, 1, 2, 3]>
    rasp.output %width : !rasp.sop<categorical, [0, 1, 2, 3]>
  }
}

// CHECK:      %neither.not_a = rasp.select %indices, %indices {label = "neither.not_a", predicate = #rasp<comparison GEQ>, src = "prog.py:8"}
// CHECK-NEXT: %neither.not_b = rasp.select %tokens, %tokens {label = "neither.not_b", predicate = #rasp<comparison NEQ>, src = "prog.py:8"}
// CHECK-NEXT: %neither = rasp.selector_or %neither.not_a, %neither.not_b {label = "neither", src = "prog.py:8"}
// CHECK-NEXT: %width = rasp.selector_width %neither

// -----

// LT or EQ over the same keys and queries is LEQ.
builtin.module {
  rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b"]>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical, [0, 1, 2]>
    %before = rasp.select %indices, %indices {label = "before", predicate = #rasp<comparison LT>} : !rasp.sop<categorical, [0, 1, 2]>, !rasp.sop<categorical, [0, 1, 2]>
    %here = rasp.select %indices, %indices {label = "here", predicate = #rasp<comparison EQ>} : !rasp.sop<categorical, [0, 1, 2]>, !rasp.sop<categorical, [0, 1, 2]>
    %upto = rasp.selector_or %before, %here {label = "upto", src = "prog.py:10"}
    %first = rasp.aggregate %upto, %tokens {label = "first", default = #raspc.value<none>} : !rasp.sop<categorical, ["a", "b"]> -> !rasp.sop<categorical, ["a", "b"]>
    rasp.output %first : !rasp.sop<categorical, ["a", "b"]>
  }
}

// CHECK:      %upto = rasp.select %indices, %indices {label = "upto", predicate = #rasp<comparison LEQ>, src = "prog.py:10"}
// CHECK-NEXT: %first = rasp.aggregate %upto, %tokens

// -----

// A relation and a comparison over the same keys and queries give a relation, '?' (the predicate
// raises there) wherever either side raises.
builtin.module {
  rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b"]>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical, [0, 1, 2]>
    %before = rasp.select %indices, %indices {label = "before", predicate = #rasp<comparison LT>} : !rasp.sop<categorical, [0, 1, 2]>, !rasp.sop<categorical, [0, 1, 2]>
    %odd = rasp.select %indices, %indices {label = "odd", predicate = #rasp.relation<keys = [0, 1, 2], queries = [0, 1, 2], rows = ["010", "010", "11?"]>} : !rasp.sop<categorical, [0, 1, 2]>, !rasp.sop<categorical, [0, 1, 2]>
    %odd_before = rasp.selector_and %odd, %before {label = "odd_before", src = "prog.py:11"}
    %width = rasp.selector_width %odd_before {label = "width"} : !rasp.sop<categorical, [0, 1, 2, 3]>
    rasp.output %width : !rasp.sop<categorical, [0, 1, 2, 3]>
  }
}

// CHECK:      %odd_before = rasp.select %indices, %indices {label = "odd_before", predicate = #rasp.relation<keys = [0, 1, 2], queries = [0, 1, 2], rows = ["000", "000", "11?"]>, src = "prog.py:11"}
// CHECK-NEXT: %width = rasp.selector_width %odd_before {label = "width"} : !rasp.sop<categorical, [0, 1, 2]>
// CHECK-NOT:  rasp.selector_and
