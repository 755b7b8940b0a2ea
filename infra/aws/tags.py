"""Default tags for every taggable AWS resource.

They are applied once, through the AWS provider's ``default_tags``, so no resource can forget them;
the tests check that every AWS resource is created through that provider.
"""

from __future__ import annotations

from infra.naming import PROJECT
from infra.schema import StackConfig


def default_tags(cfg: StackConfig, stack: str) -> dict[str, str]:
    """Project, environment, stack and managed-by tags, plus the stack's extra ``tags``.

    The four standard tags win over extra tags of the same name, so cost reports cannot be spoofed
    by a stack file.
    """
    return {
        **cfg.tags,
        "project": PROJECT,
        "environment": cfg.environment,
        "stack": stack,
        "managed-by": "pulumi",
    }
