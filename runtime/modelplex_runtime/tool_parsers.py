"""Tool calls in a model's own output format: which format a model uses, and parsing it, whole or streamed.

Formats (vLLM's parser names, the entry's ``tool_call_parser``):

- ``hermes`` (Hermes, Qwen 2.5/3): ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, repeated;
- ``llama3_json`` (Llama 3.1+): the answer is ``{"name": ..., "parameters": {...}}`` (optionally after
  ``<|python_tag|>``), several separated by ``; ``;
- ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``.

``StreamParser`` turns text deltas into OpenAI's streamed shape: content until a call starts, then for
each call its id and name first and then fragments of its arguments' JSON text, which concatenate to
exactly the arguments the model wrote.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from modelplex_runtime.constraints import FORMATS

PYTHON_TAG = "<|python_tag|>"


def infer_format(template: str | None) -> str | None:
    """The tool-call format a chat template teaches, when exactly one format's markers appear in it."""
    if not template:
        return None
    found = set()
    if "<tool_call>" in template:
        found.add("hermes")
    if "[TOOL_CALLS]" in template:
        found.add("mistral")
    if PYTHON_TAG in template or ('"parameters"' in template and "<|eom_id|>" in template):
        found.add("llama3_json")
    return found.pop() if len(found) == 1 else None


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text
    id: str = field(default_factory=new_call_id)

    def to_openai(self) -> dict[str, object]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class Parsed:
    content: str | None
    calls: list[ToolCall]


def _value_end(text: str, start: int) -> int | None:
    """The index just past the JSON value starting at ``start`` (object, array, string or scalar), or
    None while it is incomplete."""
    depth = 0
    in_string = escaped = False
    i = start
    while i < len(text):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if depth == 0:
                    return i + 1
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        elif depth == 0 and ch in ",} \n\t;":
            return i
        i += 1
    return None


def _call_from(obj: object, key: str) -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get(key, obj.get("arguments", obj.get("parameters", {})))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(obj["name"], json.dumps(args, ensure_ascii=False))


def _objects(text: str) -> list[object] | None:
    """Consecutive JSON values in ``text`` separated by whitespace, ``;`` or ``,``; None if any is not JSON."""
    decoder = json.JSONDecoder()
    out: list[object] = []
    i = 0
    while True:
        while i < len(text) and text[i] in " \n\t;,":
            i += 1
        if i >= len(text):
            return out
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return None
        out.append(value)


def parse(fmt: str, text: str) -> Parsed:
    """A whole answer: its content (None when it is only tool calls) and its calls. Output that is not a
    well-formed call stays content."""
    key = FORMATS[fmt]["arguments"]
    if fmt == "hermes":
        calls: list[ToolCall] = []
        pieces: list[str] = []
        rest = text
        while "<tool_call>" in rest:
            before, _, after = rest.partition("<tool_call>")
            body, closed, tail = after.partition("</tool_call>")
            objs = _objects(body.strip())
            found = [_call_from(o, key) for o in objs or []]
            if not objs or None in found:
                break
            pieces.append(before)
            calls.extend(c for c in found if c is not None)
            rest = tail if closed else ""
        if not calls:
            return Parsed(text, [])
        content = ("".join(pieces) + rest).strip()
        return Parsed(content or None, calls)
    body = text.strip()
    if fmt == "mistral":
        before, marker, after = text.partition("[TOOL_CALLS]")
        if not marker:
            return Parsed(text, [])
        objs = _objects(after.strip())
        flat = [o for v in objs or [] for o in (v if isinstance(v, list) else [v])]
        found = [_call_from(o, key) for o in flat]
        if not flat or None in found:
            return Parsed(text, [])
        return Parsed(before.strip() or None, [c for c in found if c is not None])
    body = body.removeprefix(PYTHON_TAG).strip()
    if not body.startswith("{"):
        return Parsed(text, [])
    objs = _objects(body)
    found = [_call_from(o, key) for o in objs or []]
    if not objs or None in found:
        return Parsed(text, [])
    return Parsed(None, [c for c in found if c is not None])


@dataclass
class Delta:
    """One piece of a streamed answer: ``content``, or for call ``index`` its start (id, name) or an
    ``arguments`` fragment."""

    content: str | None = None
    index: int | None = None
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


class StreamParser:
    """Text deltas in, OpenAI stream deltas out (see the module doc)."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self._key = FORMATS[fmt]["arguments"]
        self._open = {"hermes": "<tool_call>", "mistral": "[TOOL_CALLS]", "llama3_json": ""}[fmt]
        self._buf = ""  # text not yet decided
        self._in_calls = False
        self._content_only = False  # llama3_json: the answer did not start with a call
        self.calls: list[ToolCall] = []
        self._current: ToolCall | None = None
        self._args_sent = 0
        self._args_start: int | None = None

    def feed(self, text: str) -> list[Delta]:
        self._buf += text
        out: list[Delta] = []
        while True:
            if not self._in_calls:
                emitted = self._before_calls()
                if emitted is None:
                    break
                out.extend(emitted)
                continue
            progressed = self._in_call(out)
            if not progressed:
                break
        return out

    def finish(self) -> list[Delta]:
        """At the end of generation: text still held back (a partial marker) goes out as content."""
        out = [Delta(content=self._buf)] if not self._in_calls and self._buf else []
        self._buf = ""
        return out

    # ---- before the first call: content, holding back what may start the marker ----
    def _before_calls(self) -> list[Delta] | None:
        buf = self._buf
        if self._content_only:
            self._buf = ""
            return [Delta(content=buf)] if buf else None
        if self.fmt == "llama3_json":  # the answer is a call when it starts with one
            stripped = buf.lstrip()
            if not stripped or (PYTHON_TAG.startswith(stripped) and stripped != PYTHON_TAG):
                return None
            if stripped.startswith(PYTHON_TAG) or stripped.startswith("{"):
                self._in_calls = True
                self._buf = stripped.removeprefix(PYTHON_TAG)
                return []
            self._content_only = True
            return []
        at = buf.find(self._open)
        if at >= 0:
            self._in_calls = True
            self._buf = buf[at + len(self._open):]
            return [Delta(content=buf[:at])] if buf[:at] else []
        keep = _partial_suffix(buf, self._open)
        if len(buf) - keep <= 0:
            return None
        self._buf = buf[len(buf) - keep:]
        return [Delta(content=buf[: len(buf) - keep])]

    # ---- inside the calls region ----
    def _in_call(self, out: list[Delta]) -> bool:
        buf = self._buf
        if self._current is None:
            start = buf.find("{")
            if start < 0:
                if self.fmt == "hermes" and "<tool_call>" in buf:
                    self._buf = buf[buf.find("<tool_call>") + len("<tool_call>"):]
                    return True
                return False
            name_end = self._name(buf, start)
            if name_end is None:
                return False
            name, _after = name_end
            self._current = ToolCall(name, "")
            self.calls.append(self._current)
            out.append(Delta(index=len(self.calls) - 1, id=self._current.id, name=name))
            self._buf = buf[start:]
            self._args_start = self._args_offset(self._buf)
            self._args_sent = 0
            return True
        if self._args_start is None:
            self._args_start = self._args_offset(buf)
            if self._args_start is None:
                return False
        end = _value_end(buf, self._args_start)
        upto = end if end is not None else len(buf)
        fragment = buf[self._args_start + self._args_sent: upto]
        if fragment:
            self._args_sent += len(fragment)
            self._current.arguments += fragment
            out.append(Delta(index=len(self.calls) - 1, arguments=fragment))
        if end is None:
            return False
        close = _value_end(buf, 0)
        if close is None:
            return False
        self._buf = buf[close:]
        self._current, self._args_start, self._args_sent = None, None, 0
        return True

    def _name(self, buf: str, start: int) -> tuple[str, int] | None:
        at = buf.find('"name"', start)
        if at < 0:
            return None
        colon = buf.find(":", at + 6)
        if colon < 0:
            return None
        i = colon + 1
        while i < len(buf) and buf[i] in " \n\t":
            i += 1
        end = _value_end(buf, i)
        if end is None or (end >= len(buf) and not buf[i:end].endswith('"')):
            return None
        try:
            name = json.loads(buf[i:end])
        except json.JSONDecodeError:
            return None
        return (name, end) if isinstance(name, str) else None

    def _args_offset(self, buf: str) -> int | None:
        for key in (self._key, "arguments", "parameters"):
            at = buf.find(f'"{key}"')
            if at >= 0:
                colon = buf.find(":", at + len(key) + 2)
                if colon < 0:
                    return None
                i = colon + 1
                while i < len(buf) and buf[i] in " \n\t":
                    i += 1
                return i if i < len(buf) else None
        return None


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0
