"""Shipped weights: written by applications/cifar10/export_weights.py. Do not edit by hand."""

WEIGHTS = {}
