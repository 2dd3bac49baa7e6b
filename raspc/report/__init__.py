"""Pictures of a compiled model: a self-contained HTML report (`build_report`, `write_report`).

    raspc report sort.onnx 3 1 2 -o sort.html           # or CompiledModel.report("sort.html", [...])

Everything is read from the ONNX file through `ModelView` (metadata + the transformer-shaped graph),
so a report needs no compiler and opens without network access.
"""

from raspc.report.html import build_report, write_report
from raspc.report.model_view import ModelView
from raspc.report.program_graph import attach_program_graph, program_graph, read_program_graph

__all__ = ["build_report", "write_report", "ModelView", "attach_program_graph", "program_graph", "read_program_graph"]
