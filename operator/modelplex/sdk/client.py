"""The synchronous client: the mistral.rs Runner's multi-model methods over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any, TypeVar

import httpx
from httpx_sse import EventSource

from modelplex.errors import error_from_response
from modelplex.sdk import calls
from modelplex.sdk.calls import DEFAULT_BASE_URL, Call, StreamCall, auth_headers, normalize_base_url
from modelplex.sdk.responses import (
    DEFAULT_TIMEOUT,
    SSE_HEADERS,
    check_event_stream,
    read_answer,
    stream_cut_error,
    transport_errors,
)

T = TypeVar("T")


class Client:
    """A modelplex server (the router) at ``base_url``; use as a context manager or call ``close()``.

    ``model_id=None`` on a request method leaves the model to the request, or to the server's default
    model when the request names none.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self._http = httpx.Client(
            base_url=self.base_url, headers=auth_headers(api_key), timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, call: Call[T]) -> T:
        with transport_errors(self.base_url):
            response = self._http.request(call.method, call.path, json=call.body)
        return read_answer(call, response.status_code, response.headers, response.text)

    def _stream(self, call: StreamCall) -> Iterator[dict[str, Any]]:
        with (
            transport_errors(self.base_url),
            self._http.stream("POST", call.path, json=call.body, headers=SSE_HEADERS) as response,
        ):
            if response.status_code >= 400:
                raise error_from_response(response.status_code, response.headers, response.read().decode())
            check_event_stream(call.path, response.status_code, response.headers)
            for event in EventSource(response).iter_sse():
                chunks, done = call.read(event.event, event.data)
                yield from chunks
                if done:
                    return
        raise stream_cut_error(call.path)

    def list_models(self) -> list[str]:
        """The API ids of all models (aliases where configured), without ``default``."""
        return self._call(calls.list_models())

    def list_models_with_status(self) -> list[tuple[str, str]]:
        """(model id, status) pairs; status is ``loaded``, ``unloaded``, ``reloading`` or ``failed``."""
        return self._call(calls.list_models_with_status())

    def get_default_model_id(self) -> str:
        return self._call(calls.get_default_model_id())

    def set_default_model_id(self, model_id: str) -> str:
        """Make ``model_id`` (an alias or a pipeline name) the default; returns its API id."""
        return self._call(calls.set_default_model_id(model_id))

    def model_status(self, model_id: str) -> str:
        """The model's status word; ModelNotFoundError for an unknown id."""
        return self._call(calls.model_status(model_id))

    def is_model_loaded(self, model_id: str) -> bool:
        return self._call(calls.is_model_loaded(model_id))

    def unload_model(self, model_id: str) -> str:
        """Unload now (the next request loads it again); returns the new status."""
        return self._call(calls.unload_model(model_id))

    def reload_model(self, model_id: str) -> str:
        """Load the model and wait until it is ready; ModelLoadFailedError when the load fails."""
        return self._call(calls.reload_model(model_id))

    def send_chat_completion_request(self, request: Any, model_id: str | None = None) -> dict[str, Any]:
        """A chat completion (OpenAI's JSON answer as a dict)."""
        return self._call(calls.chat_completion(request, model_id))

    def stream_chat_completion_request(
        self, request: Any, model_id: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The chat completion's chunks as they arrive (``calls.chunk_text`` gives each chunk's text)."""
        return self._stream(calls.stream_chat_completion(request, model_id))

    def send_completion_request(self, request: Any, model_id: str | None = None) -> dict[str, Any]:
        return self._call(calls.completion(request, model_id))

    def stream_completion_request(
        self, request: Any, model_id: str | None = None
    ) -> Iterator[dict[str, Any]]:
        return self._stream(calls.stream_completion(request, model_id))

    def send_embedding_request(self, request: Any, model_id: str | None = None) -> dict[str, Any]:
        return self._call(calls.embedding(request, model_id))

    def tokenize_text(
        self, text: str | list[dict[str, Any]], add_special_tokens: bool = True, model_id: str | None = None
    ) -> list[int]:
        """Token ids of ``text`` (or of chat messages rendered with the model's chat template)."""
        return self._call(calls.tokenize(text, add_special_tokens, model_id))

    def detokenize_text(
        self, tokens: list[int], skip_special_tokens: bool = True, model_id: str | None = None
    ) -> str:
        return self._call(calls.detokenize(tokens, skip_special_tokens, model_id))

    # -- the Responses and Messages APIs (any model behind the router, whatever its engine) ----------

    def create_response(self, request: Any, model_id: str | None = None) -> dict[str, Any]:
        """OpenAI's Responses API (``{"input": ..., ...}``): the Response object as a dict."""
        return self._call(calls.create_response(request, model_id))

    def stream_response(self, request: Any, model_id: str | None = None) -> Iterator[dict[str, Any]]:
        """The Responses API's events up to ``response.completed`` (or ``.incomplete``); a
        ``response.failed`` event raises its typed error."""
        return self._stream(calls.stream_response(request, model_id))

    def get_response(self, response_id: str) -> dict[str, Any]:
        """A response the router still keeps (created with this key); ModelNotFoundError otherwise."""
        return self._call(calls.get_response(response_id))

    def delete_response(self, response_id: str) -> None:
        self._call(calls.delete_response(response_id))

    def create_message(self, request: Any, model_id: str | None = None) -> dict[str, Any]:
        """Anthropic's Messages API (``{"max_tokens": ..., "messages": [...]}``): the Message as a dict."""
        return self._call(calls.create_message(request, model_id))

    def stream_message(self, request: Any, model_id: str | None = None) -> Iterator[dict[str, Any]]:
        """The Messages API's events up to ``message_stop`` (pings skipped); an ``error`` event raises."""
        return self._stream(calls.stream_message(request, model_id))

    def count_message_tokens(self, request: Any, model_id: str | None = None) -> int:
        """The input tokens of a Messages request (its messages, system prompt and tools)."""
        return self._call(calls.count_message_tokens(request, model_id))
