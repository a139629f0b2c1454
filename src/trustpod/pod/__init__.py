"""``trustpod pod``: a Kubernetes Pod in its own pod VM (the kata shim + cloud-api-adaptor's job).

Pure modules: ``spec`` (Pod YAML), ``requests`` (kata agent requests), ``userdata`` (CAA's
cloud-config and process-user-data), ``config`` (provider settings). I/O: ``store`` (local
state), ``providers`` (CAA's provider interface: sandbox, azure), ``runner`` (the sequence).
"""

__all__: list[str] = []
