"""``build_graph``: the compiled LangGraph workflow, given a checkpointer.

Called by ``graph.runtime`` (operator, demo) and by tests (with an in-memory saver).
Collaborators arrive at invocation time as the runtime context (``graph.context.Deps``).
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from graph import context, routing, state
from graph.nodes import diagnose, gather, intake, report


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None) -> Any:
    """intake -> gather -> diagnose -> report (gather -> report when the target is gone)."""
    builder = StateGraph(state.IncidentState, context_schema=context.Deps)
    builder.add_node("intake", intake.run)
    builder.add_node("gather", gather.run)
    builder.add_node("diagnose", diagnose.run)
    builder.add_node("report", report.run)
    builder.add_edge(START, "intake")
    builder.add_edge("intake", "gather")
    builder.add_conditional_edges("gather", routing.after_gather, {"diagnose": "diagnose", "report": "report"})
    builder.add_edge("diagnose", "report")
    builder.add_edge("report", END)
    return builder.compile(checkpointer=checkpointer)
