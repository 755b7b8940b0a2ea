"""Entry point the Pulumi CLI runs for ``pulumi preview --policy-pack policy``.

The CLI starts this file from the ``policy/`` directory, where the repository root is not on
``sys.path``; it is added so the rules import as ``policy.rules``, exactly as the tests import them.
Constructing :class:`PolicyPack` starts the analyzer server and blocks, which is why the policies
themselves are built in :mod:`policy.pack`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.pack import PACK_NAME, policies

PolicyPack(
    name=PACK_NAME,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=policies(),
)
