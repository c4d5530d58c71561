"""The tiny default tokenizer: a byte-level BPE trained on the synthetic task and the agent protocol's text.

  python -m atommem_jax.data.tokenizer --overwrite        # regenerates atommem_jax/assets/tiny_tokenizer/
  python -m atommem_jax.data.tokenizer --output /tmp/tok   # somewhere else

An existing output directory is replaced only with `--overwrite`, and then whole: the new files are written beside it
and take its place once complete.

The result loads with `transformers.AutoTokenizer.from_pretrained(dir)` (or `load_tiny_tokenizer()`), has at most
`VOCAB_SIZE` = 2048 ids (the tiny model preset's vocabulary), and:
- `<|endoftext|>` (pad, id 0), `<|im_start|>` (id 1), `<|im_end|>` (eos, id 2) as special tokens;
- each protocol tag (`<add_memory>`, `</final_answer>`, `<think>`, ...) as one added, non-special token, so it
  encodes to a single id and survives `decode(..., skip_special_tokens=True)`;
- Qwen's pre-tokenisation (every digit its own token, letters in runs, punctuation apart), so years and `\\boxed{`
  `}` split at sensible places;
- every two-syllable name of the synthetic task (`synthetic.SHORT_NAMES`) as one token, with or without a leading
  space, so copying a name from the context is a single-token lookup for a tiny model;
- a Qwen-style chat template (`<|im_start|>role\\ncontent<|im_end|>\\n`, `add_generation_prompt` opens the
  assistant turn).
Training is deterministic: the same code regenerates byte-identical files.
"""
from __future__ import annotations

import importlib.resources
import os
import random
from typing import Iterator, Sequence

from atommem_jax import op_table

VOCAB_SIZE = 2048
PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, EOS_TOKEN)
# The op table's tags, opening then closing, think last: their order fixes their ids in the committed asset.
PROTOCOL_TAGS = op_table.tag_tokens()
# Qwen2/3's split: contractions, letter runs (with one leading non-letter), single digits, punctuation runs,
# newlines, spaces. One change: `{` never leads a letter run, so an answer in `\\boxed{...}` tokenizes as the same
# word does at the start of a line.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}{]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = ("{%- for message in messages %}"
                 "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
                 "{%- endfor %}"
                 "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

# Wording an observation or a response is likely to use, so the BPE learns it as few pieces.
PROTOCOL_TEXT = """\
You answer questions about a long document that you can only read one chunk at a time. You keep your own memory.
Read the document chunk by chunk and answer the questions. Ops: scratchpad search note Memory i: note Memory i
answer. A stored note moves you to the next chunk.
a scratchpad: one short note that you always see and rewrite as you go; a storage of separate notes: you see only
the few that best match your current query, listed as "Memory 1", "Memory 2", ...
replace the scratchpad, change the query, store a new note, rewrite note i of the list you were shown, remove note i,
answer the current question.
Questions:
Question 1:
Current question:
Scratchpad:
(empty)
Query:
Stored notes matching the query:
(no memory)
Chunk 1 of 3:
The document is finished. Answer this question from your memory:
Chunk 2 holds nothing for the questions; moving on.
Chunk 3: stored 2 facts.
All the facts are in view.
Answer with a single word or number.
"""


def _render_memory(facts: Sequence[str]) -> str:
  return "\n".join(f"Memory {i + 1}: {fact}" for i, fact in enumerate(facts)) if facts else "No memory."


def training_corpus(seed: int = 0) -> Iterator[str]:
  """Synthetic documents, questions and protocol-shaped turns (tags left out: they are added tokens)."""
  # Imported here so `load_tiny_tokenizer` does not pay for the generator.
  from atommem_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  task = synthetic.generate(synthetic.SyntheticConfig(seed=seed, num_documents=3000, num_questions=1500))
  rng = random.Random(seed)
  for _ in range(20):
    yield PROTOCOL_TEXT
  for name in synthetic.SHORT_NAMES:  # each name, with and without a leading space, often enough to be one token
    yield "\n".join([f"{name} {name}"] * 40)
  for i, doc in enumerate(task.documents):
    yield f"Document {i + 1}:\n{doc.title}\n{doc.text}"
  for question in task.questions:
    facts = list(question.record.supporting_facts)
    shown = rng.sample(facts, rng.randint(0, len(facts)))
    answer = question.record.answers[0]
    yield (f"Question: {question.record.question}\nScratchpad: Looking for {answer}.\nQuery: "
           f"{question.record.question}\n{_render_memory(shown)}\n")
    yield f"I need {facts[0]} Then {facts[-1]}\n{facts[0]}\nMemory {len(shown) + 1}: {facts[-1]}\n"
    yield f"The answer is \\boxed{{{answer}}}\n\\boxed{{{answer}}}"


def train_tiny_tokenizer(output_dir: str, seed: int = 0) -> None:
  """Trains the tokenizer and saves it (tokenizer.json, tokenizer_config.json, ...) into `output_dir`."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(SPLIT_PATTERN), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
  ])
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE - len(PROTOCOL_TAGS), min_frequency=2,
                                special_tokens=list(SPECIAL_TOKENS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tokenizer.train_from_iterator(training_corpus(seed), trainer=trainer)
  tokenizer.add_tokens([tokenizers.AddedToken(tag, special=False, normalized=False) for tag in PROTOCOL_TAGS])
  if tokenizer.get_vocab_size() > VOCAB_SIZE:
    raise AssertionError(f"tokenizer has {tokenizer.get_vocab_size()} ids, more than {VOCAB_SIZE}")
  wrapped = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, bos_token=None, unk_token=None,
      additional_special_tokens=[IM_START], chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
      model_max_length=1 << 20)
  os.makedirs(output_dir, exist_ok=True)
  wrapped.save_pretrained(output_dir)


def tiny_tokenizer_dir() -> str:
  return str(importlib.resources.files("atommem_jax") / "assets" / "tiny_tokenizer")


def load_tiny_tokenizer(path: str | None = None):
  """The committed tiny tokenizer (or the one saved at `path`) as a transformers tokenizer."""
  import transformers  # pylint: disable=g-import-not-at-top
  path = path or tiny_tokenizer_dir()
  if not os.path.isfile(os.path.join(path, "tokenizer.json")):
    raise FileNotFoundError(f"{path}: no tokenizer.json; regenerate with `python -m atommem_jax.data.tokenizer`")
  return transformers.AutoTokenizer.from_pretrained(path)


def main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top

  from atommem_jax import atomic_files, cli  # pylint: disable=g-import-not-at-top
  output = flags.FLAGS.output or tiny_tokenizer_dir()
  if os.path.exists(output) and not os.path.isdir(output):
    raise cli.CliError(f"--output {output} is a file, not a directory")
  if os.path.isdir(output) and os.listdir(output) and not flags.FLAGS.overwrite:
    raise cli.CliError(f"--output {output} exists; pass --overwrite to replace it")
  atomic_files.replace_dir(output, lambda staging: train_tiny_tokenizer(str(staging)))
  print(f"wrote {output}")


if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top

  from atommem_jax import cli  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("output", None, "Where to save; the package's assets/tiny_tokenizer by default.")
  flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.")
  cli.run(main)
