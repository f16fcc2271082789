"""The LLM layer: a local Ollama model advises, typed and validated; it never acts.

- ``answers``: the JSON schemas the model must answer in, and the validation of what it said
  (vocabulary, target pinning, parameters rendered against the live object).
- ``digest``: the evidence, redacted and trimmed to a budget, as prompt text.
- ``prompts`` + ``templates/``: the prompt files and their one renderer.
- ``anonymize``: optional placeholders for object names, mapped back in the answer.
- ``cache``: answers reused for the same problem and evidence.
- ``advisor``: ``ChatOllama`` calls with timeouts, one repair attempt, records of every call.

Called by the ``diagnose`` and ``propose`` graph nodes; built by ``graph.runtime``.
"""
