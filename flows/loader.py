"""Loads the versioned flow definitions and message catalogue shipped in flows/definitions/."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from importlib import resources

import yaml

from flows.model import Flow, FlowError, Messages, Node
from flows.validator import validate_flow, validate_messages

_DURATION = re.compile(r"^\s*(\d+)\s*([mhd])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_wait(value: str | None, flow: str, node: str) -> timedelta | None:
    if value is None:
        return None
    m = _DURATION.match(str(value))
    if not m:
        raise FlowError(flow, node, f"bad wait '{value}' (use e.g. 30m, 24h, 7d)")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def flow_from_dict(data: dict) -> Flow:
    name = f"{data.get('id', '?')}.v{data.get('version', '?')}"
    for key in ("id", "version", "languages", "start", "nodes"):
        if key not in data:
            raise FlowError(name, None, f"missing '{key}'")
    default_waits = data.get("waits") or {}
    nodes: dict[str, Node] = {}
    for raw in data["nodes"]:
        node_id = raw.get("id")
        if not node_id:
            raise FlowError(name, None, "a node has no id")
        if node_id in nodes:
            raise FlowError(name, node_id, "duplicate node id")
        if "ask" in raw:
            waits = {**default_waits, **(raw.get("waits") or {})}
            node = Node(
                id=node_id, kind="ask", field=raw["ask"], parse=raw.get("parse"),
                text=raw.get("text") or {}, voice=raw.get("voice") or {}, next=raw.get("next"),
                remind_after=parse_wait(waits.get("remind_after"), name, node_id),
                timeout=parse_wait(waits.get("timeout"), name, node_id),
            )
        elif "say" in raw:
            node = Node(id=node_id, kind="say", text=raw["say"] or {},
                        voice=raw.get("voice") or {}, next=raw.get("next"))
        elif "end" in raw:
            node = Node(id=node_id, kind="end", end=raw["end"])
        else:
            raise FlowError(name, node_id, "node is none of ask / say / end")
        nodes[node_id] = node
    return Flow(
        id=data["id"], version=int(data["version"]), languages=tuple(data["languages"]),
        start=data["start"], end_on_emergency=bool(data.get("end_on_emergency", False)),
        nodes=nodes,
    )


def messages_from_dict(data: dict) -> Messages:
    texts, budgets = {}, {}
    for key, entry in (data.get("messages") or {}).items():
        entry = dict(entry)
        budgets[key] = entry.pop("budget", None)
        texts[key] = entry
    return Messages(version=int(data["version"]), languages=tuple(data["languages"]),
                    texts=texts, budgets=budgets)


def _definition_files():
    return sorted(
        (p for p in resources.files("flows").joinpath("definitions").iterdir()
         if p.name.endswith(".yaml")),
        key=lambda p: p.name,
    )


@lru_cache(maxsize=1)
def registry() -> dict[tuple[str, int], Flow]:
    """Every flow version shipped, validated. A broken definition fails here, at start-up."""
    flows: dict[tuple[str, int], Flow] = {}
    for path in _definition_files():
        if path.name.startswith("messages."):
            continue
        flow = validate_flow(flow_from_dict(yaml.safe_load(path.read_text("utf-8"))))
        flows[(flow.id, flow.version)] = flow
    return flows


def get_flow(flow_id: str, version: int | None = None) -> Flow:
    """A flow by id, at `version` (a conversation keeps the version it started with) or the latest."""
    flows = registry()
    if version is None:
        versions = [v for (fid, v) in flows if fid == flow_id]
        if not versions:
            raise KeyError(f"no flow named '{flow_id}'")
        version = max(versions)
    try:
        return flows[(flow_id, version)]
    except KeyError:
        raise KeyError(f"no flow '{flow_id}' at version {version}") from None


@lru_cache(maxsize=1)
def messages() -> Messages:
    files = [p for p in _definition_files() if p.name.startswith("messages.")]
    latest = max(files, key=lambda p: int(re.search(r"v(\d+)", p.name).group(1)))
    return validate_messages(messages_from_dict(yaml.safe_load(latest.read_text("utf-8"))))


def load_all() -> None:
    """Load and validate everything now (called at start-up by every entry point)."""
    registry()
    messages()
