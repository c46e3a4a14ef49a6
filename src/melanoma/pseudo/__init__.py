"""Pseudo-labels: confidently predicted test images (from blended runs) as extra training data."""
