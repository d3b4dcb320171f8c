"""CLaRa (arXiv 2511.18659): RAG over compressed documents whose retriever learns from the generator's loss alone."""
