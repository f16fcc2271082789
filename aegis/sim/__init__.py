"""Emulated Kubernetes cluster for the demo, the tests and the benchmarks.

Never imported by production code (``aegis`` core, ``graph``, ``handlers``).
"""
