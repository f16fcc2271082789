"""The LangGraph state machine that takes one Incident from intake to report.

``state`` (the one state schema), ``context`` (injected collaborators), one
module per node in ``nodes``, pure routing functions in ``routing``, ``build``
(the graph factory), ``intake`` (K8sGPT Results → Incidents), ``engine`` (starts,
resumes and bounds workflow runs; the janitor) and ``runtime`` (assembles everything
for the operator). Imported by ``handlers``; imports only ``aegis``.
"""
