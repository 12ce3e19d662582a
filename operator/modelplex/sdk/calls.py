"""What each SDK method sends and how its answer is read, shared by the sync and async clients.

Everything here is pure: a method builds a ``Call`` (or a ``StreamCall``), the client sends it, and the
call's ``parse`` turns the decoded JSON answer into the method's result. The two clients only differ in
how they do I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from modelplex.errors import InvalidResponseError, ModelLoadFailedError, ModelNotFoundError
from modelplex.sdk.streams import StreamReader, read_chat_event, read_message_event, read_response_event

T = TypeVar("T")

DEFAULT_MODEL_ID = "default"
DEFAULT_BASE_URL = "http://127.0.0.1:1234"

# Model statuses (mistral.rs's vocabulary plus ``failed``).
STATUS_LOADED = "loaded"
STATUS_NOT_FOUND = "not_found"
_FAILED_STATUSES = frozenset({"failed", "internal_error"})


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request/answer exchange: where to send what, and how to read the JSON answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class StreamCall:
    """A streaming (SSE) POST; ``read`` turns each event into chunks until it says the stream is done."""

    path: str
    body: dict[str, Any] = field(default_factory=dict)
    read: StreamReader = read_chat_event


def normalize_base_url(base_url: str) -> str:
    """The server root: OpenAI-style URLs ending in ``/v1`` are accepted too (``/tokenize`` lives at the root)."""
    url = base_url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    return url


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def request_body(request: Any, model_id: str | None) -> dict[str, Any]:
    """A JSON body from a dict, a TypedDict or a pydantic model; ``model_id`` wins over the request's model.

    With neither, ``model`` stays out of the body so the server's default model answers.
    """
    if isinstance(request, Mapping):
        body = dict(request)
    elif hasattr(request, "model_dump"):
        body = request.model_dump(exclude_none=True)
    else:
        raise TypeError(f"a request must be a dict or a pydantic model, got {type(request).__name__}")
    if model_id is not None:
        body["model"] = model_id
    return body


def _expect(body: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(body, Mapping) or not isinstance(body.get(key), kind):
        raise InvalidResponseError(
            f"unexpected answer from the server: no {key!r} in {json.dumps(body)[:200]}", body=body
        )
    return body[key]


def _model_entries(body: Any) -> list[Mapping[str, Any]]:
    entries = _expect(body, "data", list)
    return [e for e in entries if isinstance(e, Mapping) and isinstance(e.get("id"), str)]


def _ids(body: Any) -> list[str]:
    return [e["id"] for e in _model_entries(body) if e["id"] != DEFAULT_MODEL_ID]


def _ids_with_status(body: Any) -> list[tuple[str, str]]:
    return [
        (e["id"], str(e.get("status", "unknown")))
        for e in _model_entries(body)
        if e["id"] != DEFAULT_MODEL_ID
    ]


def _model_id(body: Any) -> str:
    return _expect(body, "model_id", str)


def _status(body: Any) -> str:
    status = _expect(body, "status", str)
    if status == STATUS_NOT_FOUND:
        model_id = body.get("model_id")
        raise ModelNotFoundError(f"model {model_id!r} not found", code="model_not_found", body=body)
    return status


def _action_status(body: Any) -> str:
    """An unload/reload outcome; failures raise instead of hiding in a status word."""
    status = _status(body)
    if status in _FAILED_STATUSES:
        detail = body.get("error")
        message = str(detail) if detail else f"model {body.get('model_id')!r} failed ({status})"
        raise ModelLoadFailedError(message, code=status, body=body)
    return status


def _is_loaded(body: Any) -> bool:
    return _status(body) == STATUS_LOADED


def _json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidResponseError(f"unexpected answer from the server: {json.dumps(body)[:200]}", body=body)
    return body


def _tokens(body: Any) -> list[int]:
    return list(_expect(body, "tokens", list))


def _text(body: Any) -> str:
    return _expect(body, "text", str)


def list_models() -> Call[list[str]]:
    return Call("GET", "/v1/models", _ids)


def list_models_with_status() -> Call[list[tuple[str, str]]]:
    return Call("GET", "/v1/models", _ids_with_status)


def get_default_model_id() -> Call[str]:
    return Call("GET", "/v1/models/default", _model_id)


def set_default_model_id(model_id: str) -> Call[str]:
    return Call("POST", "/v1/models/default", _model_id, {"model_id": model_id})


def model_status(model_id: str) -> Call[str]:
    return Call("POST", "/v1/models/status", _status, {"model_id": model_id})


def is_model_loaded(model_id: str) -> Call[bool]:
    return Call("POST", "/v1/models/status", _is_loaded, {"model_id": model_id})


def unload_model(model_id: str) -> Call[str]:
    return Call("POST", "/v1/models/unload", _action_status, {"model_id": model_id})


def reload_model(model_id: str) -> Call[str]:
    return Call("POST", "/v1/models/reload", _action_status, {"model_id": model_id})


def _completion(path: str, request: Any, model_id: str | None) -> Call[dict[str, Any]]:
    body = request_body(request, model_id)
    # The non-streaming methods always want one JSON answer.
    body.pop("stream", None)
    body.pop("stream_options", None)
    return Call("POST", path, _json_object, body)


def _stream(path: str, request: Any, model_id: str | None) -> StreamCall:
    body = request_body(request, model_id)
    body["stream"] = True
    return StreamCall(path, body)


def chat_completion(request: Any, model_id: str | None = None) -> Call[dict[str, Any]]:
    return _completion("/v1/chat/completions", request, model_id)


def stream_chat_completion(request: Any, model_id: str | None = None) -> StreamCall:
    return _stream("/v1/chat/completions", request, model_id)


def completion(request: Any, model_id: str | None = None) -> Call[dict[str, Any]]:
    return _completion("/v1/completions", request, model_id)


def stream_completion(request: Any, model_id: str | None = None) -> StreamCall:
    return _stream("/v1/completions", request, model_id)


def embedding(request: Any, model_id: str | None = None) -> Call[dict[str, Any]]:
    return Call("POST", "/v1/embeddings", _json_object, request_body(request, model_id))


def tokenize(
    text: str | list[dict[str, Any]], add_special_tokens: bool = True, model_id: str | None = None
) -> Call[list[int]]:
    """Tokenize plain text, or chat messages (rendered with the model's chat template server-side)."""
    body: dict[str, Any] = {"add_special_tokens": add_special_tokens}
    body["text" if isinstance(text, str) else "messages"] = text
    if model_id is not None:
        body["model"] = model_id
    return Call("POST", "/tokenize", _tokens, body)


def detokenize(tokens: list[int], skip_special_tokens: bool = True, model_id: str | None = None) -> Call[str]:
    body: dict[str, Any] = {"tokens": list(tokens), "skip_special_tokens": skip_special_tokens}
    if model_id is not None:
        body["model"] = model_id
    return Call("POST", "/detokenize", _text, body)


# -- the Responses and Messages APIs -----------------------------------------------------------------


def create_response(request: Any, model_id: str | None = None) -> Call[dict[str, Any]]:
    return _completion("/v1/responses", request, model_id)


def stream_response(request: Any, model_id: str | None = None) -> StreamCall:
    body = request_body(request, model_id)
    body["stream"] = True
    return StreamCall("/v1/responses", body, read_response_event)


def get_response(response_id: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/responses/{_path_segment(response_id)}", _json_object)


def delete_response(response_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/responses/{_path_segment(response_id)}", _deleted)


def create_message(request: Any, model_id: str | None = None) -> Call[dict[str, Any]]:
    return _completion("/v1/messages", request, model_id)


def stream_message(request: Any, model_id: str | None = None) -> StreamCall:
    body = request_body(request, model_id)
    body["stream"] = True
    return StreamCall("/v1/messages", body, read_message_event)


def count_message_tokens(request: Any, model_id: str | None = None) -> Call[int]:
    return Call("POST", "/v1/messages/count_tokens", _input_tokens, request_body(request, model_id))


def _path_segment(value: str) -> str:
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"not a response id: {value!r}")
    return quote(value, safe="")


def _deleted(body: Any) -> None:
    if _expect(body, "deleted", bool) is not True:
        raise InvalidResponseError(f"the response was not deleted: {json.dumps(body)[:200]}", body=body)


def _input_tokens(body: Any) -> int:
    return _expect(body, "input_tokens", int)
