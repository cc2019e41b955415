"""A deterministic, offline LiteLLM custom provider for the cloud-worker tests.

Registered in config.yaml (litellm_settings.custom_provider_map) as provider "det".

- chat:       reply = "risk: <r> echo: <last user message>", where r (4 decimals in
              [0, 1)) is derived from the SHA-256 of the last user message:
              int(first 8 hex digits, 16) % 10000 / 10000. The number lets a
              worker parse a score; the echo lets tests see what arrived.
              usage: whitespace-separated word counts.
- embeddings: an 8-dimensional, L2-normalised bag of characters per input
              (character code modulo 8), rounded to 6 decimals.
"""
import hashlib
import math
import time

from litellm import CustomLLM
from litellm.types.utils import Choices, Embedding, EmbeddingResponse, Message, ModelResponse, Usage

DIM = 8


def risk(text: str) -> float:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 10000 / 10000


def _count_tokens(text: str) -> int:
    return len(text.split())


def _content_to_text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # a list of content parts [{"type": "text", "text": ...}, ...]
    return " ".join(p.get("text", "") for p in content if isinstance(p, dict))


def _embed(text: str) -> list:
    vec = [0.0] * DIM
    for ch in text:
        vec[ord(ch) % DIM] += 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [round(v / norm, 6) for v in vec]


class DeterministicLLM(CustomLLM):
    def _chat(self, model, messages, model_response: ModelResponse) -> ModelResponse:
        texts = [_content_to_text(m.get("content")) for m in messages]
        last_user = next(
            (_content_to_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        reply = f"risk: {risk(last_user):.4f} echo: {last_user}"
        prompt_tokens = sum(_count_tokens(t) for t in texts)
        completion_tokens = _count_tokens(reply)
        model_response.choices = [
            Choices(index=0, finish_reason="stop", message=Message(role="assistant", content=reply))
        ]
        model_response.model = model
        model_response.created = int(time.time())
        setattr(
            model_response,
            "usage",
            Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )
        return model_response

    def _embedding(self, model, input, model_response: EmbeddingResponse) -> EmbeddingResponse:
        if isinstance(input, str):
            input = [input]
        items = []
        for s in input:
            if not isinstance(s, str):  # token-id arrays: embed their decimal representation
                s = " ".join(str(t) for t in s) if isinstance(s, list) else str(s)
            items.append(s)
        model_response.model = model
        model_response.object = "list"
        model_response.data = [
            Embedding(embedding=_embed(s), index=i, object="embedding") for i, s in enumerate(items)
        ]
        prompt_tokens = sum(_count_tokens(s) for s in items)
        model_response.usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=0, total_tokens=prompt_tokens)
        return model_response

    # --- LiteLLM CustomLLM hooks (sync and async) ---
    def completion(self, model, messages, *args, **kwargs):
        return self._chat(model, messages, kwargs.get("model_response") or args[3])

    async def acompletion(self, model, messages, *args, **kwargs):
        return self._chat(model, messages, kwargs.get("model_response") or args[3])

    def _chunks(self, model, messages):
        resp = self._chat(model, messages, ModelResponse())
        words = resp.choices[0].message.content.split(" ")
        for i, w in enumerate(words):
            last = i == len(words) - 1
            yield {
                "text": w if i == 0 else " " + w,
                "is_finished": last,
                "finish_reason": "stop" if last else None,
                "index": 0,
                "tool_use": None,
                "usage": {
                    "prompt_tokens": resp.usage.prompt_tokens,
                    "completion_tokens": resp.usage.completion_tokens,
                    "total_tokens": resp.usage.total_tokens,
                }
                if last
                else None,
            }

    def streaming(self, model, messages, *args, **kwargs):
        yield from self._chunks(model, messages)

    async def astreaming(self, model, messages, *args, **kwargs):
        for c in self._chunks(model, messages):
            yield c

    def embedding(self, model, input, model_response, *args, **kwargs):
        return self._embedding(model, input, model_response)

    async def aembedding(self, model, input, model_response, *args, **kwargs):
        return self._embedding(model, input, model_response)


det_handler = DeterministicLLM()
