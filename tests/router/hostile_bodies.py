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
