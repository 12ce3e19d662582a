"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: the Anthropic Messages API on top of every
model's chat completions (and ``/tokenize``).

Every error of these endpoints, from the router or from the runtime, has Anthropic's shape
``{"type": "error", "error": {"type", "message"}}`` with the status it came with (the type follows
the status: 400 ``invalid_request_error``, 401 ``authentication_error``, 403 ``permission_error``,
404 ``not_found_error``, 413 ``request_too_large``, 429 ``rate_limit_error``, 503 (a model loading or
failing to load) ``overloaded_error``, 504 ``timeout_error``, other 5xx ``api_error``); in a stream it
is an ``error`` event.
"""

from __future__ import annotations

import json
from typing import Any

from modelplex_router.apis import messages_request as mr
from modelplex_router.apis import sse
from modelplex_router.apis.chat import UpstreamAnswerError, read_reply, upstream_error
from modelplex_router.apis.messages_object import ANTHROPIC_ERRORS, error_answer, message_object
from modelplex_router.apis.messages_stream import MessagesStream
from modelplex_router.pipeline import Exchange, Incoming

CHAT_PATH = "/v1/chat/completions"
TOKENIZE_PATH = "/tokenize"


class MessagesAnswer:
    def __init__(self, model: str, stop_sequences: list[str] | None) -> None:
        self.model = model
        self.stop_sequences = stop_sequences

    def whole(self, status: int, content: bytes, media_type: str) -> tuple[int, bytes, str]:
        try:
            if status >= 400:
                raise upstream_error(status, content)
            message = message_object(self.model, read_reply(content), self.stop_sequences)
        except UpstreamAnswerError as err:
            return error_answer(err)
        return 200, json.dumps(message).encode(), "application/json"

    def stream(self) -> MessagesStream:
        return MessagesStream(self.model, self.stop_sequences)

    def keepalive(self, model_id: str, waited: float | None) -> bytes:
        return sse.frame({"type": "ping"}, "ping")


class MessagesApi:
    errors = ANTHROPIC_ERRORS

    def exchange(self, incoming: Incoming) -> Exchange:
        req = mr.parse_request(incoming.payload)
        answer = MessagesAnswer(incoming.model_id, req.stop_sequences)
        return Exchange(CHAT_PATH, mr.chat_request(req), bool(req.stream), answer)


class TokenCountAnswer:
    """The runtime's ``/tokenize`` answer as ``{"input_tokens": N}``."""

    def whole(self, status: int, content: bytes, media_type: str) -> tuple[int, bytes, str]:
        if status in (404, 405):
            # vLLM and the modelplex runtime serve /tokenize; an engine that does not cannot count.
            message = "this model's engine has no /tokenize endpoint, so its tokens cannot be counted here"
            return error_answer(UpstreamAnswerError(501, message))
        if status >= 400:
            return error_answer(upstream_error(status, content))
        try:
            body = json.loads(content)
            count = body["count"] if isinstance(body.get("count"), int) else len(body["tokens"])
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            return error_answer(UpstreamAnswerError(502, "the runtime's /tokenize answer has no token count"))
        return 200, json.dumps({"input_tokens": count}).encode(), "application/json"

    def stream(self) -> Any:
        raise NotImplementedError("token counts are never streamed")

    def keepalive(self, model_id: str, waited: float | None) -> bytes:
        raise NotImplementedError("token counts are never streamed")


class CountTokensApi:
    errors = ANTHROPIC_ERRORS

    def exchange(self, incoming: Incoming) -> Exchange:
        req = mr.parse_count_request(incoming.payload)
        return Exchange(TOKENIZE_PATH, mr.tokenize_request(req), False, TokenCountAnswer())
