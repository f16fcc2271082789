"""Kopf entry points: ``kopf run -m handlers`` (or ``aegis run``).

Importing this package registers the handlers (and only that: no client is
built and no graph compiled at import time). ``lifecycle`` opens the runtime at
start-up, ``results`` feeds K8sGPT Results to the engine, ``incidents`` resumes
unfinished Incident workflows and answers approvals, ``admission`` stamps who
approved (served only when ``AEGIS_ADMISSION_WEBHOOK`` is on).
"""

from handlers import admission, incidents, lifecycle, results

__all__ = ["admission", "incidents", "lifecycle", "results"]
