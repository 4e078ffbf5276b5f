"""Evaluation of trained stages (``python evaluate.py``): text -> video, interpolation and decoder metrics."""
