"""The permutation tracer: layouts of tensors (``layout``), spaces of units (``spaces``), the
walk over the graph (``trace``), one rule per operation family (``rules``) and the resulting spec
(``collect``)."""
