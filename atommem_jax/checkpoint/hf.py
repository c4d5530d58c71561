"""HF safetensors <-> NNX Qwen3: a regex key table with an explicit layout (transpose/reshape) per weight.

Loading reads tensor slices straight into sharded JAX arrays (`jax.make_array_from_callback` + safetensors
`get_slice`): each device's shard is read from the file for that device alone, so no full host copy of the model is
made. Every HF tensor must be known, every parameter must be filled, and every shape must match the config;
otherwise one error names the tensor.
"""
from __future__ import annotations

import contextlib
import json
import pathlib
import re
from typing import Any, Iterator

import jax
import ml_dtypes
from jax.experimental import multihost_utils
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from atommem_jax import sharding as sharding_lib
from atommem_jax.checkpoint.tokenizer_files import copy_tokenizer_files
from atommem_jax.model.config import Qwen3Config
from atommem_jax.model.partitioning import abstract_model, param_shardings
from atommem_jax.model.qwen3 import Qwen3

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
  """A checkpoint that does not match the model: a missing, unknown or misshapen tensor, or a bad layout."""


# Layouts: how one HF tensor (torch Linear weights are (out, in)) becomes our per-layer parameter.
#   same:      identical (embeddings, norms, lm_head kept (V, D))
#   transpose: (out, in) -> (in, out)                          MLP projections
#   heads_out: (X*H, D) -> (D, X, H)                           q/k/v projections
#   heads_in:  (D, N*H) -> (N, H, D)                           attention output projection
KEY_TABLE: tuple[tuple[str, str, str], ...] = (
    (r"model\.embed_tokens\.weight", "embed", "same"),
    (r"model\.norm\.weight", "final_norm", "same"),
    (r"lm_head\.weight", "lm_head", "same"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", "layers/attn_norm", "same"),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.weight", "layers/q_proj", "heads_out"),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.weight", "layers/k_proj", "heads_out"),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.weight", "layers/v_proj", "heads_out"),
    (r"model\.layers\.(\d+)\.self_attn\.q_norm\.weight", "layers/q_norm", "same"),
    (r"model\.layers\.(\d+)\.self_attn\.k_norm\.weight", "layers/k_norm", "same"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", "layers/o_proj", "heads_in"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", "layers/mlp_norm", "same"),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", "layers/gate_proj", "transpose"),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", "layers/up_proj", "transpose"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", "layers/down_proj", "transpose"),
)
# Buffers some older exports contain; they are recomputed from the config.
IGNORED_TENSORS = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",)

_NP_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
_ST_DTYPES = {"F32": "float32", "BF16": "bfloat16"}


def hf_name(path: str, layer: int | None) -> str:
  """Our parameter path (+ layer) -> the HF tensor name, by inverting KEY_TABLE."""
  for pattern, ours, _ in KEY_TABLE:
    if ours == path:
      return pattern.replace(r"(\d+)", str(layer)).replace("\\", "")
  raise KeyError(path)


def _layout(path: str) -> str:
  return next(layout for _, ours, layout in KEY_TABLE if ours == path)


def hf_shape(layout: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  if layout == "same":
    return shape
  if layout == "transpose":
    return shape[::-1]
  if layout == "heads_out":
    d, x, h = shape
    return (x * h, d)
  if layout == "heads_in":
    n, h, d = shape
    return (d, n * h)
  raise ValueError(layout)


def to_hf(layout: str, ours: np.ndarray) -> np.ndarray:
  if layout == "same":
    return np.ascontiguousarray(ours)
  if layout == "transpose":
    return np.ascontiguousarray(ours.T)
  if layout == "heads_out":
    d, x, h = ours.shape
    return np.ascontiguousarray(ours.reshape(d, x * h).T)
  if layout == "heads_in":
    n, h, d = ours.shape
    return np.ascontiguousarray(ours.reshape(n * h, d).T)
  raise ValueError(layout)


def _bounds(index: slice, size: int) -> tuple[int, int]:
  start, stop, step = index.indices(size)
  if step != 1:
    raise ValueError(f"strided shard index {index}")
  return start, stop


def read_block(tensor_slice: Any, layout: str, index: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
  """Reads the block `index` of our layout (shape `shape`) from an HF tensor slice handle, touching only its rows."""
  if layout == "same":
    return tensor_slice[tuple(slice(*_bounds(i, n)) for i, n in zip(index, shape))]
  if layout == "transpose":
    return tensor_slice[tuple(slice(*_bounds(i, n)) for i, n in zip(index[::-1], shape[::-1]))].T
  if layout == "heads_out":
    (d0, d1), (x0, x1), (h0, h1) = (_bounds(i, n) for i, n in zip(index, shape))
    h = shape[2]
    block = tensor_slice[x0 * h:x1 * h, d0:d1]
    return block.T.reshape(d1 - d0, x1 - x0, h)[:, :, h0:h1]
  if layout == "heads_in":
    (n0, n1), (h0, h1), (d0, d1) = (_bounds(i, n) for i, n in zip(index, shape))
    h = shape[1]
    block = tensor_slice[d0:d1, n0 * h:n1 * h]
    return block.reshape(d1 - d0, n1 - n0, h).transpose(1, 2, 0)[:, h0:h1, :]
  raise ValueError(layout)


def _tensor_files(path: pathlib.Path) -> dict[str, pathlib.Path]:
  """HF tensor name -> the safetensors file holding it."""
  if not path.exists():
    raise FileNotFoundError(f"HF checkpoint directory {path} does not exist")
  index = path / INDEX_FILE
  if index.is_file():
    weight_map = json.loads(index.read_text()).get("weight_map")
    if not isinstance(weight_map, dict):
      raise CheckpointError(f"{index}: no 'weight_map' object")
    files = {name: path / file for name, file in weight_map.items()}
    for file in sorted(set(files.values())):
      if not file.is_file():
        raise FileNotFoundError(f"{index} lists shard {file.name}, which is not in {path}")
    return files
  single = path / SINGLE_FILE
  if single.is_file():
    with safe_open(single, framework="numpy") as f:
      return {name: single for name in f.keys()}
  raise FileNotFoundError(f"{path} holds neither {SINGLE_FILE} nor {INDEX_FILE}")


@contextlib.contextmanager
def _open_all(files: dict[str, pathlib.Path]) -> Iterator[dict[pathlib.Path, Any]]:
  with contextlib.ExitStack() as stack:
    yield {file: stack.enter_context(safe_open(file, framework="numpy")) for file in sorted(set(files.values()))}


def _plan(config: Qwen3Config, abstract_flat: dict[tuple[str, ...], Any], files: dict[str, pathlib.Path],
          handles: dict[pathlib.Path, Any]) -> tuple[dict[tuple[str, ...], list[str]], str]:
  """Checks names, shapes and dtypes of every HF tensor; returns our path -> HF names (one per layer), dtype."""
  expected: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {}
  plan: dict[tuple[str, ...], list[str]] = {}
  for key, abstract in abstract_flat.items():
    path = "/".join(key)
    layout = _layout(path)
    if key[0] == "layers":
      names = [hf_name(path, layer) for layer in range(config.num_layers)]
      layer_shape = tuple(abstract.shape[1:])
    else:
      names, layer_shape = [hf_name(path, None)], tuple(abstract.shape)
    plan[key] = names
    for name in names:
      expected[name] = (key, hf_shape(layout, layer_shape))
  for name, file in files.items():
    if name in expected or any(re.fullmatch(p, name) for p in IGNORED_TENSORS):
      continue
    hint = " (the config ties word embeddings)" if name == "lm_head.weight" else ""
    raise CheckpointError(f"unknown tensor {name!r} in {file.name}{hint}")
  dtypes = set()
  for name, (key, shape) in expected.items():
    if name not in files:
      raise CheckpointError(f"missing tensor {name!r} (for parameter {'/'.join(key)})")
    handle = handles[files[name]].get_slice(name)
    got = tuple(handle.get_shape())
    if got != shape:
      raise CheckpointError(f"tensor {name!r} in {files[name].name} has shape {got}, the config expects {shape}")
    dtype = _ST_DTYPES.get(handle.get_dtype())
    if dtype is None:
      raise CheckpointError(f"tensor {name!r} has dtype {handle.get_dtype()}; float32 and bfloat16 are supported")
    dtypes.add(dtype)
  if len(dtypes) != 1:
    raise CheckpointError(f"checkpoint mixes dtypes {sorted(dtypes)}; pass dtype= to cast to one")
  return plan, dtypes.pop()


def _flat(state: nnx.State) -> dict[tuple[str, ...], Any]:
  def walk(tree, prefix):
    for name, value in tree.items():
      if isinstance(value, dict):
        yield from walk(value, (*prefix, name))
      else:
        yield (*prefix, name), value
  return dict(walk(state.to_pure_dict(), ()))


def _unflat(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
  nested: dict[str, Any] = {}
  for key, value in flat.items():
    node = nested
    for part in key[:-1]:
      node = node.setdefault(part, {})
    node[key[-1]] = value
  return nested


def load_hf(path: str | pathlib.Path, *, mesh: jax.sharding.Mesh | None = None,
            rules: sharding_lib.ShardingRules = sharding_lib.DEFAULT_RULES,
            dtype: str | None = None) -> tuple[Qwen3Config, Qwen3]:
  """Loads a transformers Qwen3 checkpoint (single or sharded safetensors) as `(config, model)`.

  `dtype` (float32 | bfloat16) casts parameters and sets the activation dtype; None keeps the checkpoint's dtype.
  With `mesh`, every parameter is created with its sharding from `rules`; otherwise on the default device.
  """
  path = pathlib.Path(path)
  files = _tensor_files(path)
  config = Qwen3Config.from_hf(path)
  with _open_all(files) as handles:
    _, probe_state = abstract_model(config)
    plan, stored_dtype = _plan(config, _flat(probe_state), files, handles)
    target = dtype or stored_dtype
    if target not in _NP_DTYPES:
      raise CheckpointError(f"dtype {target!r} is not one of {sorted(_NP_DTYPES)}")
    config = config.replace(dtype=target, param_dtype=target)
    graphdef, abstract_state = abstract_model(config, mesh, rules)
    shardings = (_flat(param_shardings(abstract_state, mesh, rules)) if mesh is not None else None)
    np_dtype = _NP_DTYPES[target]
    arrays = {}
    for key, abstract in _flat(abstract_state).items():
      names, layout = plan[key], _layout("/".join(key))
      shape = tuple(abstract.shape)
      sharding = shardings[key] if shardings else jax.sharding.SingleDeviceSharding(jax.devices()[0])
      slices = [handles[files[name]].get_slice(name) for name in names]
      if key[0] == "layers":
        def fetch(index, slices=slices, layout=layout, shape=shape):
          l0, l1 = _bounds(index[0], shape[0])
          return np.stack([read_block(slices[l], layout, index[1:], shape[1:]) for l in range(l0, l1)]
                          ).astype(np_dtype, copy=False)
      else:
        def fetch(index, slices=slices, layout=layout, shape=shape):
          return read_block(slices[0], layout, index, shape).astype(np_dtype, copy=False)
      arrays[key] = jax.make_array_from_callback(shape, sharding, fetch)
  nnx.replace_by_pure_dict(abstract_state, _unflat(arrays))
  return config, nnx.merge(graphdef, abstract_state)


def _host_tensor(value: jax.Array, layer: int | None, layout: str) -> np.ndarray:
  part = value if layer is None else value[layer]
  if not part.is_fully_addressable:  # several hosts: every process gathers, process 0 writes
    part = multihost_utils.process_allgather(part, tiled=True)
  return to_hf(layout, np.asarray(jax.device_get(part)))


def export_hf(model: Qwen3, config: Qwen3Config, dst: str | pathlib.Path,
              tokenizer_src: str | pathlib.Path | None = None, *, max_shard_bytes: int = 5 * 2**30) -> None:
  """Writes `config.json` + safetensors (sharded with an index above `max_shard_bytes`) that transformers loads.

  Tensors reach the host one output file at a time, so host memory peaks at about one file, not the whole model.
  On several hosts all processes must call this; process 0 writes.
  """
  dst = pathlib.Path(dst)
  entries: dict[str, tuple[jax.Array, int | None, str]] = {}  # HF name -> (our array, layer, layout)
  for key, value in _flat(nnx.state(model)).items():
    path = "/".join(key)
    for layer in (range(value.shape[0]) if key[0] == "layers" else [None]):
      entries[hf_name(path, layer)] = (value, layer, _layout(path))
  nbytes = {name: value.nbytes // (value.shape[0] if layer is not None else 1)
            for name, (value, layer, _) in entries.items()}
  shards: list[list[str]] = [[]]
  size = 0
  for name in sorted(entries):
    if shards[-1] and size + nbytes[name] > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += nbytes[name]
  writer = jax.process_index() == 0
  if writer:
    dst.mkdir(parents=True, exist_ok=True)
  metadata = {"format": "pt"}  # transformers refuses safetensors files without a framework tag
  files = [SINGLE_FILE] if len(shards) == 1 else [
      f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  for file, names in zip(files, shards):
    tensors = {name: _host_tensor(*entries[name]) for name in names}
    if writer:
      save_file(tensors, str(dst / file), metadata=metadata)
  if not writer:
    return
  if len(shards) > 1:
    weight_map = {name: file for file, names in zip(files, shards) for name in names}
    index = {"metadata": {"total_size": sum(nbytes.values())}, "weight_map": weight_map}
    (dst / INDEX_FILE).write_text(json.dumps(index, indent=2))
  (dst / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2))
  copy_tokenizer_files(tokenizer_src, dst)
