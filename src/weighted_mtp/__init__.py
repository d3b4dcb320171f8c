"""weighted-mtp: token-, step- and document-weighted training of HF causal LMs from one loop."""

__version__ = "0.1.0"
