"""Everything that talks to the Kubernetes API: ``client`` (async access), ``incidents``
(the Incident resource) and ``evidence`` (what the cluster says about a target)."""
