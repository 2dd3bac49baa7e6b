// RUN: raspc-opt %s -p discretise-numerical-operands | filecheck %s

// A select and a sequence_map read the numerical s-op `half` through tables: both read one
// categorical copy `half_cat` (an identity map, right after `half`). `flag` can be false and 0.0,
// one number in the model; the select compares them alike, so its copy maps 0.0 to false.
builtin.module {
  rasp.program<vocab = ["a", "b", "c"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical>
    %half = rasp.map %tokens {label = "half", fn = #rasp.table<{"a" -> 0.5, "b" -> 1.5, "c" -> 2.5}>, src = "prog.py:2"} : !rasp.sop<categorical> -> !rasp.sop<numerical>
    %smaller = rasp.select %half, %half {label = "smaller", predicate = #rasp<comparison LT>} : !rasp.sop<numerical>, !rasp.sop<numerical>
    %rank = rasp.selector_width %smaller {label = "rank"} : !rasp.sop<categorical>
    %shifted = rasp.sequence_map %half, %rank {label = "shifted", fn = #rasp.table<{0.5, 0 -> 0, 1.5, 1 -> 1, 2.5, 2 -> 2}>} : !rasp.sop<numerical>, !rasp.sop<categorical> -> !rasp.sop<categorical>
    %flag = rasp.map %tokens {label = "flag", fn = #rasp.table<{"a" -> false, "b" -> 0.0, "c" -> 1}>} : !rasp.sop<categorical> -> !rasp.sop<numerical>
    %upto = rasp.select %flag, %indices {label = "upto", predicate = #rasp<comparison LEQ>} : !rasp.sop<numerical>, !rasp.sop<categorical>
    %count = rasp.selector_width %upto {label = "count"} : !rasp.sop<categorical>
    %out = rasp.sequence_map %shifted, %count {label = "out", fn = #rasp.table<{0, 0 -> 0}>} : !rasp.sop<categorical>, !rasp.sop<categorical> -> !rasp.sop<categorical>
    rasp.output %out : !rasp.sop<categorical>
  }
}

// CHECK:      %half = rasp.map %tokens
// CHECK-NEXT: %half_cat = rasp.map %half {label = "half_cat", fn = #rasp.table<{0.5 -> 0.5, 1.5 -> 1.5, 2.5 -> 2.5}>, src = "prog.py:2"} : !rasp.sop<numerical, [0.5, 1.5, 2.5]> -> !rasp.sop<categorical, [0.5, 1.5, 2.5]>
// CHECK-NEXT: %smaller = rasp.select %half_cat, %half_cat
// CHECK:      %shifted = rasp.sequence_map %half_cat, %rank
// CHECK-NEXT: %flag = rasp.map %tokens
// CHECK-NEXT: %flag_cat = rasp.map %flag {label = "flag_cat", fn = #rasp.table<{false -> false, 0.0 -> false, 1 -> 1}>} : !rasp.sop<numerical, [false, 0.0, 1]> -> !rasp.sop<categorical, [false, 1]>
// CHECK-NEXT: %upto = rasp.select %flag_cat, %indices
