"""Reductions: one (C, H, W) feature map -> the (K, H, W) maps that get drawn.

One module per reduction (or family), each a `featvis.reduce.base.Reduction` subclass
with its traits and its config dataclass; featvis.reduce.registry finds them all.
"""
