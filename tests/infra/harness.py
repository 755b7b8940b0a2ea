"""Test-side access to the offline program runner (the reusable core is :mod:`infra.mockrun`).

``run_stack(stack)`` returns the captured resources; :func:`cached_run` memoises a run per process so
many tests can assert on one stack without re-running the program each time.
"""

from __future__ import annotations

from functools import cache

from infra.mockrun import CapturedResource, StackRun, run_stack

__all__ = ["AWS_STACKS", "DIGEST", "STACKS", "CapturedResource", "StackRun", "cached_run", "run_stack"]

STACKS = ("dev", "staging", "prod", "local")
AWS_STACKS = ("dev", "staging", "prod")
DIGEST = "sha256:" + "0123456789abcdef" * 4
"""A well-formed digest for runs that need workloads enabled."""


@cache
def cached_run(stack: str, with_digest: bool = True) -> StackRun:
    """One run per (stack, digest on/off) per test process."""
    return run_stack(stack, overrides={"imageDigest": DIGEST} if with_digest else None)
