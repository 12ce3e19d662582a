"""The asyncio client: the same methods as ``Client``, awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator
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


class AsyncClient:
    """A modelplex server (the router) at ``base_url``; ``async with`` it or ``await close()``.

    Each method does what ``Client``'s method of the same name does.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=auth_headers(api_key), timeout=timeout, transport=transport
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(self, call: Call[T]) -> T:
        with transport_errors(self.base_url):
            response = await self._http.request(call.method, call.path, json=call.body)
        return read_answer(call, response.status_code, response.headers, response.text)

    async def _stream(self, call: StreamCall) -> AsyncIterator[dict[str, Any]]:
        with transport_errors(self.base_url):
            async with self._http.stream("POST", call.path, json=call.body, headers=SSE_HEADERS) as response:
                if response.status_code >= 400:
                    text = (await response.aread()).decode()
                    raise error_from_response(response.status_code, response.headers, text)
                check_event_stream(call.path, response.status_code, response.headers)
                async for event in EventSource(response).aiter_sse():
                    chunks, done = call.read(event.event, event.data)
                    for chunk in chunks:
                        yield chunk
                    if done:
                        return
        raise stream_cut_error(call.path)

    async def list_models(self) -> list[str]:
        return await self._call(calls.list_models())

    async def list_models_with_status(self) -> list[tuple[str, str]]:
        return await self._call(calls.list_models_with_status())

    async def get_default_model_id(self) -> str:
        return await self._call(calls.get_default_model_id())

    async def set_default_model_id(self, model_id: str) -> str:
        return await self._call(calls.set_default_model_id(model_id))

    async def model_status(self, model_id: str) -> str:
        return await self._call(calls.model_status(model_id))

    async def is_model_loaded(self, model_id: str) -> bool:
        return await self._call(calls.is_model_loaded(model_id))

    async def unload_model(self, model_id: str) -> str:
        return await self._call(calls.unload_model(model_id))

    async def reload_model(self, model_id: str) -> str:
        return await self._call(calls.reload_model(model_id))

    async def send_chat_completion_request(self, request: Any, model_id: str | None = None) -> dict[str, Any]:
        return await self._call(calls.chat_completion(request, model_id))

    def stream_chat_completion_request(
        self, request: Any, model_id: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """``async for chunk in client.stream_chat_completion_request(...)`` (not awaited itself)."""
        return self._stream(calls.stream_chat_completion(request, model_id))

    async def send_completion_request(self, request: Any, model_id: str | None = None) -> dict[str, Any]:
        return await self._call(calls.completion(request, model_id))

    def stream_completion_request(
        self, request: Any, model_id: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        return self._stream(calls.stream_completion(request, model_id))

    async def send_embedding_request(self, request: Any, model_id: str | None = None) -> dict[str, Any]:
        return await self._call(calls.embedding(request, model_id))

    async def tokenize_text(
        self, text: str | list[dict[str, Any]], add_special_tokens: bool = True, model_id: str | None = None
    ) -> list[int]:
        return await self._call(calls.tokenize(text, add_special_tokens, model_id))

    async def detokenize_text(
        self, tokens: list[int], skip_special_tokens: bool = True, model_id: str | None = None
    ) -> str:
        return await self._call(calls.detokenize(tokens, skip_special_tokens, model_id))

    async def create_response(self, request: Any, model_id: str | None = None) -> dict[str, Any]:
        return await self._call(calls.create_response(request, model_id))

    def stream_response(self, request: Any, model_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        return self._stream(calls.stream_response(request, model_id))

    async def get_response(self, response_id: str) -> dict[str, Any]:
        return await self._call(calls.get_response(response_id))

    async def delete_response(self, response_id: str) -> None:
        await self._call(calls.delete_response(response_id))

    async def create_message(self, request: Any, model_id: str | None = None) -> dict[str, Any]:
        return await self._call(calls.create_message(request, model_id))

    def stream_message(self, request: Any, model_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        return self._stream(calls.stream_message(request, model_id))

    async def count_message_tokens(self, request: Any, model_id: str | None = None) -> int:
        return await self._call(calls.count_message_tokens(request, model_id))
