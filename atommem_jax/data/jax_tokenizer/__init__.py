"""A byte-level BPE tokenizer's `decode` and `encode` as jittable functions over fixed-shape arrays, exact for the
tokenizers `tables.unsupported_reasons` accepts (the tiny default's among them)."""
