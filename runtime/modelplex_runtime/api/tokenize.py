"""POST /tokenize and /detokenize (vLLM's shapes: chat messages may come with the ``tools`` the chat
template renders into the prompt, as for a chat completion)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from modelplex_runtime.api.chat_request import ChatMessage, Tool, message_dicts
from modelplex_runtime.api.context import RuntimeContext
from modelplex_runtime.bodies import JSONBodyRoute
from modelplex_runtime.errors import bad_request
from modelplex_runtime.protocol import RequestBody


class TokenizeRequest(RequestBody):
    text: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    tools: list[Tool] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeRequest(RequestBody):
    tokens: list[int]
    skip_special_tokens: bool = True


def router(ctx: RuntimeContext) -> APIRouter:
    api = APIRouter(route_class=JSONBodyRoute)

    @api.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        engine = ctx.engine_for(body.model, (ctx.kind,), "tokenization")
        if body.tools and body.messages is None:
            raise bad_request("tools are rendered with chat messages: give messages too", param="tools")
        if body.tools and ctx.kind not in ("Plain", "GGUF"):
            raise bad_request(f"model {ctx.served!r} is a {ctx.kind} model and renders no tools", param="tools")
        if body.messages is not None:
            if ctx.kind == "Embedding":
                raise bad_request(f"model {ctx.served!r} is an Embedding model and has no chat template", param="messages")
            messages = message_dicts(body.messages)
            if body.tools:
                tools = [t.model_dump(exclude_none=True) for t in body.tools]
                ids = await asyncio.to_thread(engine.tokenize_chat, messages, body.add_generation_prompt, tools)
            else:
                ids = await asyncio.to_thread(engine.tokenize_chat, messages, body.add_generation_prompt)
        else:
            text = body.text if body.text is not None else body.prompt
            if text is None:
                raise bad_request("give text, prompt or messages", param="text")
            ids = await asyncio.to_thread(engine.tokenize_text, text, body.add_special_tokens)
        return {"tokens": ids, "count": len(ids), "max_model_len": engine.info.max_model_len}

    @api.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict[str, str]:
        engine = ctx.engine_for(body.model, (ctx.kind,), "detokenization")
        try:
            text = await asyncio.to_thread(engine.detokenize, body.tokens, body.skip_special_tokens)
        except (ValueError, OverflowError, IndexError, TypeError) as exc:
            raise bad_request(f"cannot detokenize these ids: {exc}", param="tokens") from exc
        return {"text": text}

    return api
