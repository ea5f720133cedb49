"""Embedded demo: procedural scenes and the small PSPNet trained on them."""
