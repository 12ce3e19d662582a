"""What every engine provides, and the checks all engines share (pure: no I/O, no processes).

An engine is a server that runs one model behind an OpenAI-compatible HTTP API. Its module here knows
everything modelplex needs about it and nothing else does: the command line an entry becomes, the
environment it adds, the paths that say it is alive, ready and where its metrics are, what in an entry it
cannot honour (a config error, never a silent drop), and how to read why it failed from its output
(``output_reader``, used by the router's ``failure_reason``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from modelplex_spec.entry import ModelEntry


@dataclass(frozen=True)
class EngineLaunch:
    """How to start one model's server: ``<interpreter> -m <module> <args>`` with ``env`` added."""

    module: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Flag:
    """Command-line arguments the mapping emits, and the entry field they come from."""

    source: str
    """The entry field (``max_seq_len``, ``GGUF.tok_model_id``, ...) or ``modelplex`` for the flags the
    router and operator always set (address, port, model name)."""
    args: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.args[0]


def flag_name(arg: str) -> str | None:
    """``--max_model_len=8`` -> ``--max-model-len``; None for a value (``8``, ``-1``, ``{}``)."""
    if not arg.startswith("-") or arg == "-" or arg.lstrip("-")[:1].isdigit() or arg.startswith("-."):
        return None
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        name = "--" + name[2:].replace("_", "-")
    return name


def flatten(flags: Iterable[Flag]) -> list[str]:
    return [arg for flag in flags for arg in flag.args]


def engine_args_conflicts(
    engine: str,
    entry_flags: Sequence[Flag],
    engine_args: Sequence[str],
    aliases: dict[str, str] | None = None,
    reserved: Sequence[str] = (),
) -> list[str]:
    """engine_args that repeat a flag the mapping sets (or one modelplex keeps for itself, ``reserved``):
    one problem each, naming the field that sets it."""
    owner = {name: "modelplex" for name in reserved}
    owner.update({flag.name: flag.source for flag in entry_flags})
    problems: list[str] = []
    for arg in engine_args:
        name = flag_name(arg)
        if name is None:
            continue
        name = (aliases or {}).get(name, name)
        source = owner.get(name)
        if source == "modelplex":
            problems.append(f"engine_args: {name} is reserved: modelplex sets it for engine {engine}")
        elif source is not None:
            problems.append(
                f"engine_args: {name} is also set from {source} for engine {engine}; give it in one place"
            )
    return problems


class OutputReader(Protocol):
    """Reads one server process's output, line by line as it comes, for why the server failed."""

    def feed(self, line: str) -> None:
        """One line of the output (stdout and stderr in order, for an engine that logs on both)."""
        ...

    def reason(self) -> str | None:
        """Why the server failed, as far as its output says so far; None when it has not said."""
        ...


class Engine(ABC):
    """One engine. Subclasses are stateless; ``modelplex_spec.engines.ENGINES`` holds one of each."""

    name: str
    """The value of the entry's ``engine`` field."""
    title: str
    """How messages name the engine's process (``the runtime``, ``vLLM``)."""
    module: str
    """``python -m <module>`` starts the server."""
    image_python: str = "python"
    """The interpreter's name in the engine's container image (``<image_python> -m <module>``)."""
    ready_path: str
    """Answers 200 once the model serves requests (readiness polls and probes)."""
    health_path: str = "/health"
    """Answers 200 while the server is alive (liveness probe)."""
    metrics_path: str = "/metrics"
    """The server's own Prometheus metrics (scraped beside the router's)."""
    takes_spares: bool = False
    """Whether the local backend may hand this engine's models to a spare runtime."""
    output_on_stdout: bool = False
    """The server logs on stdout too (its failure reasons may be there), not only on stderr."""
    flag_aliases: dict[str, str] = {}  # noqa: RUF012 - read-only
    """Short spellings the engine's parser accepts for its long flags (``-tp``)."""
    reserved_flags: tuple[str, ...] = ()
    """Flags modelplex keeps for itself although this entry's mapping does not emit them."""

    @abstractmethod
    def flags(self, entry: ModelEntry, *, host: str, port: int, served_model_name: str, gpus: int = 0) -> list[Flag]:
        """The arguments derived from the entry, in order, each with the field it comes from."""

    def env(self, entry: ModelEntry) -> dict[str, str]:
        """Environment variables the server needs for this entry (added to the inherited ones)."""
        return {}

    def writable_env(self, root: str) -> dict[str, str]:
        """Where the server may write (home, caches, config), all under ``root``: for containers whose
        root filesystem is read-only and whose user has no home directory."""
        return {"HOME": root, "XDG_CACHE_HOME": f"{root}/.cache"}

    def unsupported(self, entry: ModelEntry) -> list[str]:
        """Settings of the entry this engine has no equivalent for (one message each)."""
        return []

    def problems(self, entry: ModelEntry) -> list[str]:
        """Everything in the entry this engine cannot honour; empty when it can serve it as written."""
        problems = self.unsupported(entry)
        if entry.engine_args:
            flags = self.flags(entry, host="127.0.0.1", port=0, served_model_name=entry.api_id, gpus=self.entry_gpus(entry))
            problems += engine_args_conflicts(
                self.name, flags, entry.engine_args, self.flag_aliases, self.reserved_flags
            )
        return problems

    @staticmethod
    def entry_gpus(entry: ModelEntry) -> int:
        """GPUs the entry asks for on Kubernetes (0 when it names none)."""
        return entry.kubernetes.resources.gpus if entry.kubernetes is not None else 0

    def launch(
        self, entry: ModelEntry, *, host: str, port: int, served_model_name: str, gpus: int = 0
    ) -> EngineLaunch:
        """The command line for this entry; ``engine_args`` come last, verbatim."""
        args = flatten(self.flags(entry, host=host, port=port, served_model_name=served_model_name, gpus=gpus))
        return EngineLaunch(module=self.module, args=[*args, *(entry.engine_args or [])], env=self.env(entry))

    def output_reader(self) -> OutputReader | None:
        """A fresh reader of one server's output for why it failed, when the engine says so in its own
        words (None: the router's generic reading, plus the runtime's own failure report, suffice)."""
        return None
