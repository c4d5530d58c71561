"""Chat formatting through the tokenizer's own template (Qwen3's, or the tiny default tokenizer's).

The template lives with the tokenizer, so a released checkpoint is prompted exactly as it was trained.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

Message = Mapping[str, str]


def chat_text(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool = True,
              **template_kwargs: Any) -> str:
  """The conversation rendered by the tokenizer's chat template, ending with the assistant-turn opener.

  `template_kwargs` reach the template (Qwen3's reads `enable_thinking`).
  """
  if not getattr(tokenizer, "chat_template", None):
    raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)!r} has no chat "
                     "template (chat_template in tokenizer_config.json or chat_template.jinja)")
  for index, message in enumerate(messages):
    if set(message) < {"role", "content"} or not isinstance(message.get("content"), str):
      raise ValueError(f"message {index} must have a 'role' and a string 'content', got {dict(message)!r}")
  return tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                       add_generation_prompt=add_generation_prompt, **template_kwargs)


def chat_prompt_ids(tokenizer: Any, messages: Sequence[Message], **kwargs: Any) -> list[int]:
  """Token ids of `chat_text`; the template already holds every special token, so none are added."""
  return tokenizer.encode(chat_text(tokenizer, messages, **kwargs), add_special_tokens=False)


def user_prompt_ids(tokenizer: Any, user: str, system: str | None = None, **kwargs: Any) -> list[int]:
  """A single user turn (after an optional system message), chat-formatted and tokenized."""
  messages = ([{"role": "system", "content": system}] if system is not None else []) + [
      {"role": "user", "content": user}]
  return chat_prompt_ids(tokenizer, messages, **kwargs)
