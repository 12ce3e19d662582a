"""Map mistral.rs's ``num_device_layers`` ("ORD:NUM" items) onto a transformers device map."""

from __future__ import annotations


def parse_device_layers(items: list[str]) -> list[tuple[int, int]]:
    """[(device ordinal, layer count)], a bare "NUM" meaning device 0."""
    out: list[tuple[int, int]] = []
    for item in items:
        parts = [p.strip() for p in item.split(":")]
        out.append((0, int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1])))
    return out


def build_device_map(items: list[str], num_layers: int, device_count: int, prefix: str = "model.layers") -> dict[str, int | str]:
    """A device map placing consecutive layers on the named devices; layers not covered go to the CPU.

    Embeddings sit with the first layer, the final norm and head with the last placed layer.
    """
    plan = parse_device_layers(items)
    for ordinal, _ in plan:
        if ordinal >= device_count:
            raise ValueError(f"num_device_layers names device {ordinal} but only {device_count} device(s) exist")
    placement: list[int | str] = []
    for ordinal, count in plan:
        placement.extend([ordinal] * count)
    placement = placement[:num_layers] + ["cpu"] * max(0, num_layers - len(placement))
    device_map: dict[str, int | str] = {f"{prefix}.{i}": dev for i, dev in enumerate(placement)}
    first = placement[0] if placement else "cpu"
    last = placement[-1] if placement else "cpu"
    device_map.update({"model.embed_tokens": first, "model.rotary_emb": first, "model.norm": last, "lm_head": last})
    return device_map
