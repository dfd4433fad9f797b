"""Training, evaluation and corpus recipes for audioembed (Jansen et al., ICASSP 2018).

This package imports ``audioembed``; ``audioembed`` never imports it.
"""
