"""AtomMem in JAX/Flax: an LLM agent that manages its own memory with atomic CRUD operations."""

__version__ = "0.1.0"
