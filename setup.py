"""atommem_jax: AtomMem (atomic CRUD agent memory trained with GRPO) in JAX/Flax."""
import setuptools

# Versions verified together on CPU (Python 3.11); see BUILD_NOTES.md for GPU/TPU variants.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "transformers==5.23.0",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "scann==1.4.2",
    "tensorstore==0.1.86",
    "absl-py==2.5.1",
    "ml_collections==1.1.0",
    "numpy==2.4.6",
    "tensorboardX==2.6.5",
    "matplotlib==3.11.2",
    "tqdm==4.70.1",
    "psutil==7.2.2",  # the workdir lock: a holder's process start time
    "etils[epath]==1.15.0",  # the workdir lock on gs:// and other object stores
    "jinja2==3.1.6",  # transformers renders chat templates with it
    # The web environment: MCP client and our corpus server, its retrieval, HTML extraction, tool-call repair, GAIA.
    "mcp==2.3.0",
    "bm25s==0.3.16",
    "resiliparse==2.0.0",
    "json-repair==0.64.4",
    "pyarrow==26.0.1",
]

EXTRAS_REQUIRE = {
    # jax[tpu] brings libtpu, the TPU compiler the fit check's test runs on this CPU-only host (`atommem_jax.aot`).
    "test": ["pytest==9.2.0", "hypothesis==6.170.15", "torch==2.13.0", "jax[tpu]==0.10.2"],
    "bench": ["faiss-cpu==1.15.1", "torch==2.13.0"],
    "gpu": ["jax[cuda12]==0.10.2"],
    "tpu": ["jax[tpu]==0.10.2"],
    # `python -m atommem_jax.aot`: compiles for a TPU slice on a host without one (libtpu, at the pinned jax).
    "aot": ["jax[tpu]==0.10.2"],
}

setuptools.setup(
    name="atommem_jax",
    version="0.1.0",
    description="AtomMem: learnable dynamic agentic memory with atomic CRUD operations, in JAX/Flax.",
    packages=setuptools.find_packages(include=["atommem_jax", "atommem_jax.*"]),
    package_data={"atommem_jax": ["assets/**/*", "agent/templates/*", "agent/templates/*/*"]},
    include_package_data=True,
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
