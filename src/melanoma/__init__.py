"""melanoma: a TPU-scale pipeline for the SIIM-ISIC melanoma classification competition."""

__version__ = "0.1.0"
