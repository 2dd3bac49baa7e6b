// RUN: raspc-opt %s --split-input-file --verify-diagnostics -p combine-selectors,check-causal | filecheck %s

// A histogram counts tokens after the query too: causal masking would change it.
builtin.module {
  rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = true> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %same = rasp.select %tokens, %tokens {label = "same_tok", predicate = #rasp<comparison EQ>, src = "prog.py:2"} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %hist = rasp.selector_width %same {label = "hist", src = "prog.py:3"} : !rasp.sop<categorical>
    rasp.output %hist : !rasp.sop<categorical>
  }
}

// CHECK: s-op 'hist' (prog.py:3): causal=True would change what this s-op computes: its selector 'same_tok' can select a key after the query (e.g. query position 0, key position 1

// -----

// A relation over indices that looks one position ahead (None at the last position).
builtin.module {
  rasp.program<vocab = ["a", "b"], bos = "BOS", pad = "PAD", max_seq_len = 3, causal = true> {
    %tokens = rasp.tokens {label = "tokens"} : !rasp.sop<categorical>
    %indices = rasp.indices {label = "indices"} : !rasp.sop<categorical>
    %plus1 = rasp.map %indices {label = "plus1", fn = #rasp.table<{0 -> 1, 1 -> 2, 2 -> none}>} : !rasp.sop<categorical> -> !rasp.sop<categorical>
    %next = rasp.select %indices, %plus1 {label = "next", predicate = #rasp.relation<keys = [0, 1, 2], queries = [none, 1, 2], rows = ["000", "010", "001"]>} : !rasp.sop<categorical>, !rasp.sop<categorical>
    %ahead = rasp.aggregate %next, %tokens {label = "ahead", default = #raspc.value<none>, src = "prog.py:9"} : !rasp.sop<categorical> -> !rasp.sop<categorical>
    rasp.output %ahead : !rasp.sop<categorical>
  }
}

// CHECK: s-op 'ahead' (prog.py:9): causal=True would change what this s-op computes: its selector 'next' can select a key after the query (e.g. query position 0, key position 1
