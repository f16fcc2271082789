"""``build_graph``: the compiled LangGraph workflow, given a checkpointer.

Called by ``graph.runtime`` (operator, demo) and by tests (with an in-memory saver).
Collaborators arrive at invocation time as the runtime context (``graph.context.Deps``).
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from graph import context, metering, routing, state
from graph.nodes import apply, confirm, diagnose, gate, gather, intake, propose, report, verify


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None) -> Any:
    """intake -> gather -> diagnose -> propose -> verify (-> propose again) -> gate -> apply -> confirm -> report.

    Observe mode ends after diagnose; no plan, a failed verification bound, a refusal or a rejection end in report.
    """
    builder = StateGraph(state.IncidentState, context_schema=context.Deps)
    for name, node in (
        ("intake", intake.run),
        ("gather", gather.run),
        ("diagnose", diagnose.run),
        ("propose", propose.run),
        ("verify", verify.run),
        ("gate", gate.run),
        ("apply", apply.run),
        ("confirm", confirm.run),
        ("report", report.run),
    ):
        builder.add_node(name, metering.timed(name, node))  # each stage's latency, in the operator's metrics
    builder.add_edge(START, "intake")
    builder.add_edge("intake", "gather")
    builder.add_conditional_edges("gather", routing.after_gather, {"diagnose": "diagnose", "report": "report"})
    builder.add_conditional_edges("diagnose", routing.after_diagnose, {"propose": "propose", "report": "report"})
    builder.add_conditional_edges("propose", routing.after_propose, {"verify": "verify", "report": "report"})
    builder.add_conditional_edges(
        "verify", routing.after_verify, {"gate": "gate", "propose": "propose", "report": "report"}
    )
    builder.add_conditional_edges(
        "gate", routing.after_gate, {"apply": "apply", "verify": "verify", "report": "report"}
    )
    builder.add_conditional_edges("apply", routing.after_apply, {"confirm": "confirm", "report": "report"})
    builder.add_edge("confirm", "report")
    builder.add_edge("report", END)
    return builder.compile(checkpointer=checkpointer)
