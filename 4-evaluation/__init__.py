"""Evaluation: embedders, metrics, regression suite, copyright gate, MOS (see issues 5 and 6)."""
