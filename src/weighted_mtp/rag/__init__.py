"""Retrieval for retrieval-augmented methods (StepER, CLaRa): passages, BM25 and dense indexes,
QA and retrieval metrics, loaders for the public multi-hop QA datasets."""
