"""A corpus of hostile request bodies the router must refuse itself, each with the 4xx it answers.

Each case: (id, Content-Type header or None, raw body, status, error code, param or None). They are
sent to every forwarded endpoint (tests/router/test_hostile_input.py); none may reach a runtime.
"""

from __future__ import annotations

JSON = "application/json"
CHAT = b'"messages": [{"role": "user", "content": "hi"}]'

DEEP = 100_000

CASES: list[tuple[str, str | None, bytes, int, str, str | None]] = [
    ("deep-array", JSON, b'{"model": "alpha", "x": ' + b"[" * DEEP + b"]" * DEEP + b"}", 400, "invalid_request", None),
    ("deep-object", JSON, b'{"model": "alpha", "x": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}", 400,
     "invalid_request", None),
    ("deep-unclosed", JSON, b"[" * DEEP, 400, "invalid_request", None),
    ("lone-high-surrogate", JSON, b'{"model": "alpha", ' + CHAT.replace(b"hi", b"\\ud800") + b"}", 400,
     "invalid_request", "messages[0].content"),
    ("lone-low-surrogate", JSON, b'{"model": "alpha", ' + CHAT.replace(b"hi", b"x\\udc00y") + b"}", 400,
     "invalid_request", "messages[0].content"),
    ("surrogate-in-model", JSON, b'{"model": "\\udfff", ' + CHAT + b"}", 400, "invalid_request", "model"),
    ("surrogate-in-key", JSON, b'{"model": "alpha", "\\ud800": 1, ' + CHAT + b"}", 400, "invalid_request", None),
    ("reversed-pair", JSON, b'{"model": "alpha", "prompt": "\\udc00\\ud800"}', 400, "invalid_request", "prompt"),
    ("raw-surrogate-bytes", JSON, b'{"model": "alpha", "prompt": "\xed\xa0\x80"}', 400, "invalid_request", None),
    ("invalid-utf8", JSON, b'{"model": "alpha", "prompt": "\xff\xfe"}', 400, "invalid_request", None),
    ("nan", JSON, b'{"model": "alpha", "temperature": NaN, ' + CHAT + b"}", 400, "invalid_request", None),
    ("infinity", JSON, b'{"model": "alpha", "temperature": -Infinity, ' + CHAT + b"}", 400, "invalid_request", None),
    ("huge-integer", JSON, b'{"model": "alpha", "seed": ' + b"9" * 5000 + b", " + CHAT + b"}", 400,
     "invalid_request", None),
    ("not-json", JSON, b"model=alpha&prompt=hi", 400, "invalid_request", None),
    ("truncated", JSON, b'{"model": "alpha", "messages": [', 400, "invalid_request", None),
    ("empty", JSON, b"", 400, "invalid_request", None),
    ("array", JSON, b'[{"model": "alpha"}]', 400, "invalid_request", None),
    ("string", JSON, b'"alpha"', 400, "invalid_request", None),
    ("null", JSON, b"null", 400, "invalid_request", None),
    ("model-number", JSON, b'{"model": 5, ' + CHAT + b"}", 400, "invalid_request", "model"),
    ("model-list", JSON, b'{"model": ["alpha"], ' + CHAT + b"}", 400, "invalid_request", "model"),
    ("model-object", JSON, b'{"model": {"id": "alpha"}, ' + CHAT + b"}", 400, "invalid_request", "model"),
    ("model-true", JSON, b'{"model": true, ' + CHAT + b"}", 400, "invalid_request", "model"),
    ("stream-string", JSON, b'{"model": "alpha", "stream": "yes", ' + CHAT + b"}", 400, "invalid_request", "stream"),
    ("stream-number", JSON, b'{"model": "alpha", "stream": 1, ' + CHAT + b"}", 400, "invalid_request", "stream"),
    ("stream-deep", JSON, b'{"model": "alpha", "stream": ' + b"[" * 500 + b"]" * 500 + b"}", 400,
     "invalid_request", "stream"),
    ("text-plain", "text/plain", b'{"model": "alpha", ' + CHAT + b"}", 415, "unsupported_media_type", None),
    ("no-content-type", None, b'{"model": "alpha", ' + CHAT + b"}", 415, "unsupported_media_type", None),
    ("form", "application/x-www-form-urlencoded", b'{"model": "alpha", ' + CHAT + b"}", 415,
     "unsupported_media_type", None),
    ("json-lookalike", "application/jsonp", b'{"model": "alpha", ' + CHAT + b"}", 415, "unsupported_media_type", None),
    ("unknown-model", JSON, b'{"model": "nope", ' + CHAT + b"}", 404, "model_not_found", None),
]


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


MESSAGES = b'"messages": [{"role": "user", "content": "hi"}]'
RESPONSES = "/v1/responses"
MESSAGE_PATHS = ("/v1/messages", "/v1/messages/count_tokens")


def _responses(case: str, fields: bytes, param: str) -> list[tuple[str, str, bytes, str]]:
    return [(case, RESPONSES, b'{"model": "alpha", ' + fields + b"}", param)]


def _messages(case: str, fields: bytes, param: str, paths: tuple[str, ...] = MESSAGE_PATHS) -> list[
    tuple[str, str, bytes, str]
]:
    """The case on each Messages path: a message request also has its required ``max_tokens`` (a token
    count has none)."""
    max_tokens = {"/v1/messages": b'"max_tokens": 8, ', "/v1/messages/count_tokens": b""}
    return [(case, path, b'{"model": "alpha", ' + max_tokens[path] + fields + b"}", param) for path in paths]


def _deep(depth: int) -> list[tuple[str, str, bytes, str]]:
    nested = _nested(depth)
    schema = b'"text": {"format": {"type": "json_schema", "name": "n", "schema": {"x": ' + nested + b"}}}"
    parameters = b'"tools": [{"type": "function", "name": "f", "parameters": {"x": ' + nested + b"}}]"
    tool_use = b'{"type": "tool_use", "id": "t", "name": "f", "input": {"x": ' + nested + b"}}"
    history = b'"messages": [{"role": "assistant", "content": [' + tool_use + b']}, {"role": "user", "content": "hi"}]'
    input_schema = b'"tools": [{"name": "f", "input_schema": {"x": ' + nested + b"}}], " + MESSAGES
    return [
        *_responses(f"deep-format-schema-{depth}", b'"input": "x", ' + schema, "text.format.schema.x"),
        *_responses(f"deep-tool-parameters-{depth}", b'"input": "x", ' + parameters, "tools[0].parameters.x"),
        *_messages(f"deep-tool-input-{depth}", history, "messages[0].content[0].input.x"),
        *_messages(f"deep-input-schema-{depth}", input_schema, "tools[0].input_schema.x"),
    ]


# Bodies that pass the router's generic checks but not a translated API's request model: wrong types
# (never coerced: "8" is not a number, "yes" not a boolean), and JSON nested deeper than a request of
# these APIs ever is, inside the fields the translation copies and echoes (schemas, tool inputs), at
# depths on both sides of the one where the JSON parser itself gives up.
# Each case: (id, path, raw body, param the error names). All are 400 in the path's error shape. A
# "deep-" case names the field where the nesting starts (its first levels), or, past the depth the
# parser gives up at, nothing: the body as a whole "nests JSON too deeply".
DEPTHS = (129, 500, 900, 960, 980, 990, 999)
ONLY_MESSAGES = ("/v1/messages",)
TRANSLATED_CASES: list[tuple[str, str, bytes, str]] = [
    *_responses("input-number", b'"input": 5', "input"),
    *_responses("input-missing", b'"stream": false', "input"),
    *_responses("input-item-string", b'"input": ["hi"]', "input[0]"),
    *_responses("max-output-tokens-string", b'"input": "x", "max_output_tokens": "5"', "max_output_tokens"),
    *_responses("max-output-tokens-true", b'"input": "x", "max_output_tokens": true', "max_output_tokens"),
    *_responses("temperature-string", b'"input": "x", "temperature": "1"', "temperature"),
    *_responses("store-string", b'"input": "x", "store": "yes"', "store"),
    *_responses("previous-id-number", b'"input": "x", "previous_response_id": 5', "previous_response_id"),
    *_responses("tools-object", b'"input": "x", "tools": {}', "tools"),
    *_responses("text-string", b'"input": "x", "text": "json"', "text"),
    ("max-tokens-missing", "/v1/messages", b'{"model": "alpha", ' + MESSAGES + b"}", "max_tokens"),
    ("max-tokens-string", "/v1/messages", b'{"model": "alpha", "max_tokens": "8", ' + MESSAGES + b"}", "max_tokens"),
    ("max-tokens-true", "/v1/messages", b'{"model": "alpha", "max_tokens": true, ' + MESSAGES + b"}", "max_tokens"),
    ("max-tokens-float", "/v1/messages", b'{"model": "alpha", "max_tokens": 8.5, ' + MESSAGES + b"}", "max_tokens"),
    *_messages("top-k-string", b'"top_k": "1", ' + MESSAGES, "top_k", ONLY_MESSAGES),
    *_messages("stop-sequences-string", b'"stop_sequences": "x", ' + MESSAGES, "stop_sequences", ONLY_MESSAGES),
    *_messages("messages-string", b'"messages": "hi"', "messages"),
    *_messages("messages-empty", b'"messages": []', "messages"),
    *_messages("content-number", b'"messages": [{"role": "user", "content": 5}]', "messages[0].content"),
    *_messages("block-without-type", b'"messages": [{"role": "user", "content": [{"text": "x"}]}]',
               "messages[0].content[0]"),
    *_messages("system-number", b'"system": 5, ' + MESSAGES, "system"),
    *[case for depth in DEPTHS for case in _deep(depth)],
]
