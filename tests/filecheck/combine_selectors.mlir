// RUN: raspc-opt %s -p combine-selectors | filecheck %s

builtin.module attributes {raspc.vocab = #rasp.values<["a", "b"]>, raspc.bos = #rasp.value<"BOS">, raspc.pad = #rasp.value<"PAD">, raspc.max_seq_len = 3 : i64, raspc.causal = false} {
  %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b"]>
  %lt = rasp.select %tokens, %tokens {label = "lt", table = array<i8: 0, 0, 1, 0>, comparison = "LT", src = "prog.py:3"} : !rasp.sop<categorical, ["a", "b"]>, !rasp.sop<categorical, ["a", "b"]>
  %not_lt = rasp.selector_not %lt {label = "not_lt", src = "prog.py:4"}
  %width = rasp.selector_width %not_lt {label = "width", src = "prog.py:4"} : !rasp.sop<categorical, [0, 1, 2, 3]>
  rasp.output %width : !rasp.sop<categorical, [0, 1, 2, 3]>
}

// not(select(k, q, T)) folds into one select with the negated table; the old select is dead.
// CHECK-NOT:  rasp.selector_not
// CHECK:      %not_lt = rasp.select %tokens, %tokens {label = "not_lt", table = array<i8: 1, 1, 0, 1>
// CHECK-NEXT: %width = rasp.selector_width %not_lt
