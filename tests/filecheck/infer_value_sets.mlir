// RUN: raspc-opt %s -p infer-value-sets | filecheck %s

// A hand-written program leaves every value set out (`!rasp.sop<categorical>`); the pass infers
// them: tokens from the vocabulary, maps and sequence maps as the images of their tables, an
// aggregate that can select nothing can be its default (None), a width that always counts the
// query's own position starts at 1.
builtin.module {
  rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = false> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical>
    %is_a = rasp.map %tokens {label = "is_a", fn = #rasp.table<{"a" -> 1, "b" -> 0}>} : !rasp.sop<categorical> -> !rasp.sop<categorical>
    %prev = rasp.select %indices, %indices {label = "prev", predicate = #rasp.relation<keys = [0, 1, 2], queries = [0, 1, 2], rows = ["000", "100", "010"]>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %shifted = rasp.aggregate %prev, %is_a {label = "shifted", default = #raspc.value<none>} : !rasp.sop<categorical> -> !rasp.sop<categorical>
    %same = rasp.select %tokens, %tokens {label = "same", predicate = #rasp<comparison EQ>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %hist = rasp.selector_width %same {label = "hist"} : !rasp.sop<categorical>
    %is_a_num = rasp.map %tokens {label = "is_a_num", fn = #rasp.table<{"a" -> 1, "b" -> 0}>} : !rasp.sop<categorical> -> !rasp.sop<numerical>
    %frac = rasp.aggregate %same, %is_a_num {label = "frac", default = #raspc.value<0>} : !rasp.sop<numerical> -> !rasp.sop<numerical>
    %hist_frac = rasp.sequence_map %hist, %frac {label = "hist_frac", fn = #rasp.table<{1, 1.0 -> 1, 2, 0.5 -> 2}>} : !rasp.sop<categorical>, !rasp.sop<numerical> -> !rasp.sop<categorical>
    %out = rasp.sequence_map %shifted, %hist_frac {label = "out", fn = #rasp.table<{0, 1 -> "x", 0, 2 -> "y", 1, 1 -> "z"}>} : !rasp.sop<categorical>, !rasp.sop<categorical> -> !rasp.sop<categorical>
    rasp.output %out : !rasp.sop<categorical>
  }
}

// CHECK:      %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical, ["a", "b"]>
// CHECK-NEXT: %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical, [0, 1, 2]>
// CHECK-NEXT: %is_a = rasp.map %tokens {{.*}} : !rasp.sop<categorical, ["a", "b"]> -> !rasp.sop<categorical, [0, 1]>
// CHECK-NEXT: %prev = rasp.select %indices, %indices {{.*}} : !rasp.sop<categorical, [0, 1, 2]>, !rasp.sop<categorical, [0, 1, 2]>
// CHECK-NEXT: %shifted = rasp.aggregate %prev, %is_a {{.*}} : !rasp.sop<categorical, [0, 1]> -> !rasp.sop<categorical, [none, 0, 1]>
// CHECK-NEXT: %same = rasp.select %tokens, %tokens
// CHECK-NEXT: %hist = rasp.selector_width %same {label = "hist"} : !rasp.sop<categorical, [1, 2, 3]>
// CHECK-NEXT: %is_a_num = rasp.map %tokens {{.*}} -> !rasp.sop<numerical, [0, 1]>
// Numerical means of 1..3 values: one value keeps its type, two or more average to floats.
// CHECK-NEXT: %frac = rasp.aggregate %same, %is_a_num {{.*}} -> !rasp.sop<numerical, [0, 0.0, 0.3333333333333333, 0.5, 0.6666666666666666, 1, 1.0]>
// CHECK-NEXT: %hist_frac = rasp.sequence_map %hist, %frac {{.*}} -> !rasp.sop<categorical, [1, 2]>
// CHECK-NEXT: %out = rasp.sequence_map %shifted, %hist_frac {{.*}} -> !rasp.sop<categorical, [none, "x", "y", "z"]>
// CHECK-NEXT: rasp.output %out : !rasp.sop<categorical, [none, "x", "y", "z"]>
