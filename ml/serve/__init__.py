"""The REST service the serving Deployment runs (``python -m ml serve``).

Modules: :mod:`.settings` (env vars and flags), :mod:`.state` (the loaded model and hot reload),
:mod:`.batching` (micro-batching of concurrent requests into one model call), :mod:`.inference`
(records in, predictions out), :mod:`.schemas` and :mod:`.v2` (the two HTTP APIs), :mod:`.metrics`,
:mod:`.app` (wiring) and :mod:`.cli`.
"""
