"""``POST /v1/responses``: the OpenAI Responses API on top of every model's chat completions.

``ResponsesApi`` turns a request into a chat completion (``responses_request``), adding the
earlier turns of ``previous_response_id`` from the store; ``ResponsesAnswer`` turns the runtime's
reply into a Response object (``responses_object``; streamed, into the Responses events:
``responses_stream``) and keeps it in the store unless ``store`` is false.
"""

from __future__ import annotations

import json
from typing import Any

from modelplex_router.answer import OPENAI_ERRORS, StreamTranslator, loading_comment
from modelplex_router.apis import responses_request as rr
from modelplex_router.apis.chat import UpstreamAnswerError, read_reply, upstream_error
from modelplex_router.apis.response_store import ResponseStore
from modelplex_router.apis.responses_object import ResponseFrame, output_items, owner_of
from modelplex_router.apis.responses_stream import ResponsesStream
from modelplex_router.errors import RouterError
from modelplex_router.pipeline import Exchange, Incoming

CHAT_PATH = "/v1/chat/completions"


class ResponseNotFound(RouterError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "response_not_found"


class ResponsesAnswer:
    def __init__(self, frame: ResponseFrame) -> None:
        self.frame = frame

    def whole(self, status: int, content: bytes, media_type: str) -> tuple[int, bytes, str]:
        try:
            if status >= 400:
                raise upstream_error(status, content)
            reply = read_reply(content)
        except UpstreamAnswerError as err:
            return err.status_code, json.dumps(err.body()).encode(), "application/json"
        response = self.frame.finished(reply, output_items(reply))
        return 200, json.dumps(response).encode(), "application/json"

    def stream(self) -> StreamTranslator:
        return ResponsesStream(self.frame)

    def keepalive(self, model_id: str, waited: float | None) -> bytes:
        return loading_comment(model_id, waited)


class ResponsesApi:
    errors = OPENAI_ERRORS

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    def exchange(self, incoming: Incoming) -> Exchange:
        req = rr.parse_request(incoming.payload)
        store = self.store
        owner = owner_of(incoming.principal)
        history: list[dict[str, Any]] = []
        if req.previous_response_id is not None:
            previous = store.get(owner, req.previous_response_id)
            if previous is None:
                raise ResponseNotFound(
                    f"Previous response with id {req.previous_response_id!r} not found (responses are "
                    "kept in this router's memory for a while, per key; see docs/router.md)",
                    param="previous_response_id",
                )
            history = previous.conversation
        payload = rr.chat_request(req, history)
        conversation = [*history, *rr.input_messages(req.input)]
        frame = ResponseFrame(
            req, incoming.model_id, conversation, None if req.store is False else store, owner
        )
        return Exchange(CHAT_PATH, payload, bool(req.stream), ResponsesAnswer(frame))
