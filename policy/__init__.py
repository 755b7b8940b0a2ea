"""CrossGuard policy pack for the purchase-classifier stacks.

Rules live in :mod:`policy.rules` as pure functions (testable without the Pulumi CLI),
:mod:`policy.pack` turns them into pulumi-policy objects and ``__main__.py`` serves them to
``pulumi preview --policy-pack policy``.
"""
