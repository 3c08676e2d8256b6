"""The shapes of flow definitions once loaded: a Flow of Nodes, and the message catalogue."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import timedelta


class FlowError(ValueError):
    """A flow definition that cannot be used; the message names the flow, the node and the problem."""

    def __init__(self, flow: str, node: str | None, problem: str):
        self.flow, self.node, self.problem = flow, node, problem
        where = f"{flow}" + (f", node '{node}'" if node else "")
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # "say" | "ask" | "end"
    field: str | None = None  # the answer field an "ask" node fills
    parse: str | None = None  # the parser kind for an "ask" node
    text: Mapping[str, str] = dc_field(default_factory=dict)  # language -> SMS text
    voice: Mapping[str, str] = dc_field(default_factory=dict)  # language -> spoken text (optional)
    next: str | None = None
    remind_after: timedelta | None = None
    timeout: timedelta | None = None
    end: str | None = None  # "assess" | "assess_followup"

    def text_for(self, lang: str, channel: str = "sms") -> str:
        if channel == "voice" and lang in self.voice:
            return self.voice[lang]
        return self.text[lang]


@dataclass(frozen=True)
class Flow:
    id: str
    version: int
    languages: tuple[str, ...]
    start: str
    end_on_emergency: bool
    nodes: Mapping[str, Node]

    @property
    def key(self) -> str:
        return f"{self.id}.v{self.version}"

    @property
    def questions(self) -> tuple[Node, ...]:
        """The ask nodes, in definition order."""
        return tuple(n for n in self.nodes.values() if n.kind == "ask")


@dataclass(frozen=True)
class Messages:
    version: int
    languages: tuple[str, ...]
    texts: Mapping[str, Mapping[str, str]]  # key -> language -> text
    budgets: Mapping[str, str]  # key -> budget name

    def get(self, key: str, lang: str) -> str:
        return self.texts[key][lang]
