"""The weight constructions: pure functions from labelled directions and tables to blocks.

They know nothing of the IR: `mlp.py` builds `MlpBlock`s (lookup, discretising, sequence-map,
linear, selector-width and typed-mean MLPs), `attention.py` builds `HeadBlock`s (a conjunction of
selects scored additively, None through an affine indicator, BOS as default or as a share).
`lowering/rasp_to_craft.py` calls them and turns the blocks into craft ops; each is tested alone
in tests/test_construction_blocks.py.
"""
