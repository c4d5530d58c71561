"""The tiny default tokenizer: a byte-level BPE trained on the synthetic task and the agent protocol's text.

  python -m atommem_jax.data.tokenizer --overwrite        # regenerates atommem_jax/assets/tiny_tokenizer/
  python -m atommem_jax.data.tokenizer --web --overwrite  # regenerates atommem_jax/assets/tiny_web_tokenizer/
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
  assistant turn); given `tools=` (OpenAI-style function schemas), it ends the first message with one line naming
  each tool and its parameters, `Tools: search(query, num_results) fetch_url(url, purpose, page)`: Qwen3's template
  prints the whole schemas, too many tokens for a tiny model's context.
The web variant (`web=True`, `assets/tiny_web_tokenizer/`, the web environment's tiny default) also learns the
web environment's text (urls of the synthetic sites, tool-call JSON, search results, fetched pages) and holds
`<tool_call>` and `</tool_call>` as single added tokens, so a call costs about 30 tokens instead of 90.
Training is deterministic: the same code regenerates byte-identical files.
"""
from __future__ import annotations

import importlib.resources
import itertools
import json
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
# Qwen's tool-call tags (`tools.tool_calls.OPEN_TAG` / `CLOSE_TAG`), added tokens of the web variant only.
TOOL_CALL_TAGS = ("<tool_call>", "</tool_call>")
# Qwen2/3's split: contractions, letter runs (with one leading non-letter), single digits, punctuation runs,
# newlines, spaces. One change: `{` never leads a letter run, so an answer in `\\boxed{...}` tokenizes as the same
# word does at the start of a line.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}{]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = ("{%- for message in messages %}"
                 "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] }}"
                 "{%- if loop.first and tools %}{{- '\\nTools:' }}{%- for tool in tools %}"
                 "{{- ' ' + tool['function']['name'] + '(' + (tool['function']['parameters']['properties'] | join(', '))"
                 " + ')' }}{%- endfor %}{%- endif %}"
                 "{{- '<|im_end|>' + '\\n' }}"
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


# The web environment's wording (its templates, the tool-call slot, the chat template's tools line).
WEB_TEXT = """\
Answer the question by searching the web and reading pages; you see only your last tool call and its result.
You answer a question by searching the web and reading pages. Each step you see only your last tool call and its
result, so keep what you learn in your own memory. Fetch at most one URL per call.
Tools: search(query, num_results) fetch_url(url, purpose, page)
Website: https://world17.example
Website: (none)
Reads in a row: 0 of 3
Your last step:
(nothing yet: this is your first step)
You made no tool call. Your response was:
Your tool call did not run (tool call is not JSON and could not be repaired). Your response was:
Tool response:
Step 1 of 10.
Step 10 of 10: this is your last step. The tools are withdrawn; answer now with
Error: cannot fetch 'https://world3.example/wiki/Kada': no such page
No results for 'world3.example Kada'.
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


def web_training_corpus(seed: int = 0, num_worlds: int = 400) -> Iterator[str]:
  """The web environment's text on synthetic sites: fetched pages, search results and tool calls as the corpus
  server and the web oracle write them."""
  from atommem_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  for _ in range(20):
    yield WEB_TEXT
  rng = random.Random(seed)
  for world in range(num_worlds):
    task = synthetic.generate(synthetic.SyntheticConfig(seed=seed + world, num_documents=16, num_questions=1))
    host = f"world{rng.randrange(2000)}.example"
    url = lambda name: f"https://{host}/wiki/{name}"  # pylint: disable=cell-var-from-loop
    titles = {doc.title for doc in task.documents}
    pages = {}
    for doc in task.documents:
      sentences = [f.sentence if f.object not in titles else f.sentence[:-1] + f" ({url(f.object)})."
                   for f in task.facts if f.title == doc.title]
      pages[doc.title] = "\n\n".join([doc.title] + sentences + [host])
    names = sorted(pages)
    for name in names:
      call = json.dumps({"name": "fetch_url", "arguments": {"url": url(name)}})
      yield (f"<tool_call>{call}</tool_call>\nYou called fetch_url {json.dumps({'url': url(name)})}\n"
             f"Tool response:\nTitle: {name}\nURL: {url(name)}\nPart 1 of 1\n\n{pages[name]}")
    for _ in range(4):
      query = f"{host} {rng.choice(names)}"
      hits = rng.sample(names, 3)
      call = json.dumps({"name": "search", "arguments": {"query": query}})
      yield (f"<tool_call>{call}</tool_call>\nYou called search {json.dumps({'query': query})}\nTool response:\n"
             + "\n\n".join(f"{i}. {name}\nURL: {url(name)}\n{' '.join(pages[name].split())}"
                            for i, name in enumerate(hits, start=1)))


def train_tiny_tokenizer(output_dir: str, seed: int = 0, web: bool = False) -> None:
  """Trains the tokenizer (the web variant with `web`) and saves it (tokenizer.json, tokenizer_config.json, ...)
  into `output_dir`."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(SPLIT_PATTERN), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
  ])
  tokenizer.decoder = decoders.ByteLevel()
  added_tags = PROTOCOL_TAGS + (TOOL_CALL_TAGS if web else ())
  trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE - len(added_tags), min_frequency=2,
                                special_tokens=list(SPECIAL_TOKENS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  corpus = training_corpus(seed)
  if web:
    corpus = itertools.chain(corpus, web_training_corpus(seed))
  tokenizer.train_from_iterator(corpus, trainer=trainer)
  tokenizer.add_tokens([tokenizers.AddedToken(tag, special=False, normalized=False) for tag in added_tags])
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


def tiny_web_tokenizer_dir() -> str:
  return str(importlib.resources.files("atommem_jax") / "assets" / "tiny_web_tokenizer")


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
  web = flags.FLAGS.web
  output = flags.FLAGS.output or (tiny_web_tokenizer_dir() if web else tiny_tokenizer_dir())
  if os.path.exists(output) and not os.path.isdir(output):
    raise cli.CliError(f"--output {output} is a file, not a directory")
  if os.path.isdir(output) and os.listdir(output) and not flags.FLAGS.overwrite:
    raise cli.CliError(f"--output {output} exists; pass --overwrite to replace it")
  atomic_files.replace_dir(output, lambda staging: train_tiny_tokenizer(str(staging), web=web))
  print(f"wrote {output}")


if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top

  from atommem_jax import cli  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("output", None, "Where to save; the package's assets/tiny_tokenizer (or tiny_web_tokenizer) "
                      "by default.")
  flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.")
  flags.DEFINE_bool("web", False, "The web variant (the web environment's text, tool-call tags as added tokens).")
  cli.run(main)
