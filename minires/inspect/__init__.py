"""minires.inspect: where does the gradient go in this network?

    import minires as mr
    report = mr.inspect.gradient_flow(model, x, y)    # one forward + backward, model untouched
    print(report)                                     # per layer and per residual block,
                                                      # each column explained in a footer
    report                                            # in Jupyter: HTML tables
    print(mr.inspect.compare({"plain20": p, "resnet20": r}, x, y))

``gradient_flow`` and ``compare`` (flow.py) watch one pass through public hooks
only; ``FlowReport`` and ``Comparison`` (report.py) hold the numbers and turn them
into tables (their columns and bars: tables.py), CSV and figures; ``GradFlowLog``
(training.py) records per-layer gradient norms during training for
``python -m minires.train --inspect-every``. Files are written and figures drawn through
``minires.files``: ``plot()`` without matplotlib raises ``minires.files.MatplotlibMissing``.
"""
from .flow import compare, cosine, default_loss, gradient_flow, model_name, norm, residual_blocks
from .report import (
    BLOCK_FIELDS,
    BLOCK_LEGEND,
    COMPARE_LEGEND,
    LAYER_FIELDS,
    LAYER_LEGEND,
    Comparison,
    FlowReport,
)
from .training import GradFlowLog, layer_grad_norms, plot_heatmap, read_gradflow

__all__ = ["BLOCK_FIELDS", "BLOCK_LEGEND", "COMPARE_LEGEND", "LAYER_FIELDS", "LAYER_LEGEND",
           "Comparison", "FlowReport", "GradFlowLog", "compare", "cosine", "default_loss",
           "gradient_flow", "layer_grad_norms", "model_name", "norm", "plot_heatmap",
           "read_gradflow", "residual_blocks"]
