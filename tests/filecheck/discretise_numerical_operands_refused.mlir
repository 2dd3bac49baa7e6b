// RUN: raspc-opt %s --split-input-file --verify-diagnostics -p discretise-numerical-operands | filecheck %s

// `x` can be 1, 1.0 and true: one number in the model, but the table answers differently.
builtin.module {
  rasp.program<vocab = ["a", "b", "c"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %x = rasp.map %tokens {label = "x", fn = #rasp.table<{"a" -> 1, "b" -> 1.0, "c" -> true}>} : !rasp.sop<categorical> -> !rasp.sop<numerical>
    %shown = rasp.sequence_map %x, %tokens {label = "shown", fn = #rasp.table<{1, "a" -> "1a", 1.0, "b" -> "1.0b", true, "c" -> "Truec"}>, src = "prog.py:3"} : !rasp.sop<numerical>, !rasp.sop<categorical> -> !rasp.sop<categorical>
    rasp.output %shown : !rasp.sop<categorical>
  }
}

// CHECK: s-op 'shown' (prog.py:3): 'x' can be true and 1, which one number cannot tell apart, but 'shown' maps them differently

// -----

// A relation that selects 0 but not 0.0.
builtin.module {
  rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %x = rasp.map %tokens {label = "x", fn = #rasp.table<{"a" -> 0, "b" -> 0.0}>} : !rasp.sop<categorical> -> !rasp.sop<numerical>
    %ints = rasp.select %x, %tokens {label = "ints", predicate = #rasp.relation<keys = [0, 0.0], queries = ["a", "b"], rows = ["10", "10"]>, src = "prog.py:5"} : !rasp.sop<numerical>, !rasp.sop<categorical>
    %width = rasp.selector_width %ints {label = "width"} : !rasp.sop<categorical>
    rasp.output %width : !rasp.sop<categorical>
  }
}

// CHECK: s-op 'ints' (prog.py:5): 'x' can be 0 and 0.0, which one number cannot tell apart, but 'ints' selects them differently
