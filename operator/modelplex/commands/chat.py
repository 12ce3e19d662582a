"""``modelplex chat``: an interactive, streaming chat with a model of a running modelplex server.

Reads one message per line from standard input (a terminal or a pipe), keeps the conversation and
prints the reply as it streams in. Lines starting with ``/`` are commands: ``/exit``, ``/reset``,
``/model NAME``, ``/help``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from modelplex.errors import ModelplexError, RateLimitError, ServiceUnavailableError
from modelplex.sdk.calls import DEFAULT_BASE_URL, DEFAULT_MODEL_ID
from modelplex.sdk.client import Client
from modelplex.sdk.streams import chunk_text

HELP = "/exit quits, /reset forgets the conversation, /model NAME switches model (/model alone shows it)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="chat with a model of a running server",
        description="Interactive streaming chat against a running modelplex server. " + HELP + ".",
    )
    parser.add_argument(
        "--model", "-m", default=None, help="model id or alias; default: the server's default model"
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("MODELPLEX_URL", DEFAULT_BASE_URL),
        help=f"server URL (env MODELPLEX_URL; default {DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("MODELPLEX_API_KEY"), help="env MODELPLEX_API_KEY"
    )
    parser.add_argument(
        "--system", default=None, help="a system prompt kept at the start of the conversation"
    )
    parser.add_argument("--max-tokens", type=int, default=None, help="most tokens per reply")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for an answer (a model may load first)"
    )
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class Line:
    """One input line, read as a command or a message."""

    action: str  # say, exit, reset, model, help, empty, unknown
    arg: str = ""


def parse_line(text: str) -> Line:
    stripped = text.strip()
    if not stripped:
        return Line("empty")
    if not stripped.startswith("/"):
        return Line("say", stripped)
    command, _, arg = stripped.partition(" ")
    name = command[1:].lower()
    if name in ("exit", "quit", "q"):
        return Line("exit")
    if name in ("reset", "clear"):
        return Line("reset")
    if name == "model":
        return Line("model", arg.strip())
    if name in ("help", "?"):
        return Line("help")
    return Line("unknown", command)


@dataclass
class Conversation:
    model: str | None
    system: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)

    def request(self, user_text: str, max_tokens: int | None, temperature: float | None) -> dict[str, Any]:
        """The request for the next reply; ``model`` is left out to get the server's default."""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages += [*self.turns, {"role": "user", "content": user_text}]
        request: dict[str, Any] = {"messages": messages}
        for key, value in (("model", self.model), ("max_tokens", max_tokens), ("temperature", temperature)):
            if value is not None:
                request[key] = value
        return request

    def record(self, user_text: str, reply: str) -> None:
        self.turns += [{"role": "user", "content": user_text}, {"role": "assistant", "content": reply}]


def describe_error(exc: ModelplexError) -> str:
    hint = ""
    if isinstance(exc, ServiceUnavailableError | RateLimitError) and exc.retry_after is not None:
        hint = f"; try again in {exc.retry_after:g} s"
    return f"error: {exc}{hint}"


def stream_reply(client: Client, request: dict[str, Any], out: TextIO) -> str:
    """Print the reply as it streams; returns it whole. Raises ModelplexError (after ending the line)."""
    parts: list[str] = []
    try:
        for chunk in client.stream_chat_completion_request(request):
            text = chunk_text(chunk)
            if text:
                parts.append(text)
                out.write(text)
                out.flush()
    except BaseException:
        if parts:
            # End the half-printed reply so the error message starts on its own line.
            out.write("\n")
            out.flush()
        raise
    out.write("\n")
    out.flush()
    return "".join(parts)


def _read_line(interactive: bool) -> str | None:
    """The next input line; None at end of input."""
    if interactive:
        try:
            return input("> ")
        except EOFError:
            print(file=sys.stderr)
            return None
    line = sys.stdin.readline()
    return line if line else None


def _switch_model(client: Client, conversation: Conversation, name: str) -> None:
    if not name:
        shown = conversation.model or f"{DEFAULT_MODEL_ID} ({client.get_default_model_id()})"
        print(f"model: {shown}", file=sys.stderr)
        return
    # Ask first, so a typo is reported now and not on the next message.
    status = client.model_status(name)
    conversation.model = None if name == DEFAULT_MODEL_ID else name
    print(f"model: {name} ({status})", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (gives input() line editing and history)
        except ImportError:
            pass
    conversation = Conversation(model=args.model, system=args.system)
    failed = False
    with Client(args.url, api_key=args.api_key, timeout=args.timeout) as client:
        if interactive:
            print(
                f"modelplex chat with {args.model or 'the default model'} at {client.base_url}. {HELP}.",
                file=sys.stderr,
            )
        while (text := _read_line(interactive)) is not None:
            line = parse_line(text)
            if line.action == "exit":
                break
            if line.action == "reset":
                conversation.turns.clear()
                print("(conversation reset)", file=sys.stderr)
            elif line.action == "help":
                print(HELP, file=sys.stderr)
            elif line.action == "unknown":
                print(f"unknown command {line.arg}; {HELP}", file=sys.stderr)
            elif line.action in ("model", "say"):
                try:
                    if line.action == "model":
                        _switch_model(client, conversation, line.arg)
                    else:
                        request = conversation.request(line.arg, args.max_tokens, args.temperature)
                        conversation.record(line.arg, stream_reply(client, request, sys.stdout))
                except ModelplexError as exc:
                    # The failed message stays out of the history, so the next one starts clean.
                    failed = True
                    print(describe_error(exc), file=sys.stderr)
                except KeyboardInterrupt:
                    print("(interrupted; the message was dropped)", file=sys.stderr)
    return 1 if failed else 0
