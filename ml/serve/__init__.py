"""The REST service the serving Deployment runs (``python -m ml serve``).

Modules: :mod:`.settings` (env vars and flags), :mod:`.state` (the loaded model and hot reload),
:mod:`.dataplane` (limits, validation and the model call both APIs go through), :mod:`.batching`
(bounded, fair micro-batches), :mod:`.inference` (records in, predictions out), the thin HTTP
adapters :mod:`.api_v1`, :mod:`.api_v2` (with the V2 codec :mod:`.v2`) and :mod:`.ops`,
:mod:`.http` (request rules, error bodies, disconnects), :mod:`.protocol` (request head limits),
:mod:`.metrics`, :mod:`.app` (wiring) and :mod:`.cli`.
"""
