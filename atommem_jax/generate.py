"""Generate from a checkpoint with the KV-cache sampler.

  python -m atommem_jax.generate --model DIR --prompt "Once upon" --prompt "The capital of" \
      --max_new_tokens 32 --greedy --json [--attention blockwise]

DIR is a transformers Qwen3 directory (config.json + safetensors), an Orbax parameter directory written by
`atommem_jax.convert`, or a trainer workdir (`checkpoint.loader`); the tokenizer is the checkpoint's. Prompts are tokenized raw unless `--chat` wraps each one as
a user turn of the tokenizer's chat template. `--json` prints one JSON list with one object per prompt and sample:
`prompt_index`, `sample_index`, `token_ids` (generated ids, ending before EOS), `text`, `stop_reason`.
"""
from __future__ import annotations

import json
import typing
from typing import Sequence

from absl import flags

from atommem_jax import cli
from atommem_jax.model.config import Attention
from atommem_jax.sampling.from_checkpoint import generate_from_dir

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "HF Qwen3 directory or Orbax parameter directory (with tokenizer files)")
flags.DEFINE_multi_string("prompt", [], "a prompt; repeat the flag for a batch")
flags.DEFINE_integer("max_new_tokens", 64, "tokens generated per prompt and sample")
flags.DEFINE_bool("greedy", False, "argmax decoding")
flags.DEFINE_float("temperature", 1.0, "sampling temperature")
flags.DEFINE_integer("top_k", 0, "keep the k most likely tokens (0 = off)")
flags.DEFINE_float("top_p", 1.0, "nucleus mass (1.0 = off)")
flags.DEFINE_integer("num_samples", 1, "samples per prompt (one prefill, the cache broadcast to all samples)")
flags.DEFINE_multi_string("stop", [], "stop string; the text ends just after its first occurrence (repeatable)")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.DEFINE_bool("chat", False, "wrap each prompt as a user turn of the tokenizer's chat template")
flags.DEFINE_bool("json", False, "print one JSON list instead of plain text")
flags.DEFINE_enum("attention", "auto", list(typing.get_args(Attention)),
                  "attention implementation (auto: splash on TPU, cuDNN on GPU, blockwise for long rows on CPU)")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise cli.CliError(f"unexpected arguments {argv[1:]}; prompts go in --prompt")
  if not FLAGS.model:
    raise cli.CliError("--model DIR is required (an HF Qwen3 directory or an Orbax parameter directory)")
  rows = generate_from_dir(FLAGS.model, FLAGS.prompt, max_new_tokens=FLAGS.max_new_tokens, greedy=FLAGS.greedy,
                           temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p,
                           num_samples=FLAGS.num_samples, stop=FLAGS.stop, seed=FLAGS.seed, chat=FLAGS.chat,
                           attention=FLAGS.attention)
  if FLAGS.json:
    print(json.dumps(rows))
  else:
    for row in rows:
      print(f"[{row['prompt_index']}.{row['sample_index']}] {row['prompt']}{row['text']}")


if __name__ == "__main__":
  cli.run(main)
