"""Which models exist and how a request's ``model`` maps to one of them (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from modelplex_spec import ModelEntry, ModelplexConfig

DEFAULT_ALIAS = "default"


@dataclass(frozen=True)
class Catalog:
    """The configured models in file order, with O(1) lookup by API id or pipeline name."""

    entries: dict[str, ModelEntry]
    """API id -> entry, in file order."""
    _lookup: dict[str, str]
    """Every accepted name (API ids first, then pipeline names not shadowed) -> API id."""

    @classmethod
    def from_config(cls, config: ModelplexConfig) -> Catalog:
        return cls.from_entries([m.entry for m in config.models])

    @classmethod
    def from_entries(cls, entries: list[ModelEntry]) -> Catalog:
        by_id = {e.api_id: e for e in entries}
        lookup = {api_id: api_id for api_id in by_id}
        # The canonical pipeline name stays accepted; when two entries share it (two quantizations
        # under different aliases) the first in file order wins, and an alias always beats it.
        for e in entries:
            lookup.setdefault(e.pipeline_name, e.api_id)
        return cls(entries=by_id, _lookup=lookup)

    @property
    def ids(self) -> list[str]:
        return list(self.entries)

    def resolve_name(self, name: str) -> str | None:
        """An alias or pipeline name -> API id; None when unknown. ``default`` is not resolved here."""
        return self._lookup.get(name)

    def resolve_request_model(self, requested: object, default_id: str) -> str | None:
        """The body's ``model`` (missing, ``"default"``, an id or an alias) -> API id, None if unknown."""
        if requested is None or requested == "" or requested == DEFAULT_ALIAS:
            return default_id
        if not isinstance(requested, str):
            return None
        return self._lookup.get(requested)


@dataclass(frozen=True)
class CatalogChange:
    """What a new config changes in a catalog: the router applies it without a restart."""

    added: dict[str, ModelEntry]
    """API id -> entry of models that are new, in config order."""
    removed: list[str]
    """API ids no longer in the config."""
    changed: dict[str, ModelEntry]
    """API id -> new entry of models whose entry differs."""
    default_id: str
    """The default model after the change (see ``diff_catalog``)."""

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def diff_catalog(
    old: Catalog, old_default: str, new: ModelplexConfig, keep_default: bool = False
) -> tuple[Catalog, CatalogChange]:
    """The catalog for ``new`` and how it differs from ``old``.

    The default follows the config's default, except that ``keep_default`` (the default was chosen at
    run time through the API) keeps ``old_default`` for as long as that model exists.
    """
    catalog = Catalog.from_config(new)
    added = {i: e for i, e in catalog.entries.items() if i not in old.entries}
    removed = [i for i in old.entries if i not in catalog.entries]
    changed = {i: e for i, e in catalog.entries.items() if i in old.entries and old.entries[i] != e}
    default_id = old_default if keep_default and old_default in catalog.entries else new.default_model_id
    return catalog, CatalogChange(added=added, removed=removed, changed=changed, default_id=default_id)
