"""A small evaluator of Amazon ECR lifecycle policy rules: the test oracle for :mod:`infra.aws.registry`.

There is no ECR here, and moto does not run lifecycle policies, so the policy JSON is checked against
the rules as the ECR user guide states them ("Lifecycle policy evaluation rules" and "Lifecycle
policy properties"):

- every rule is evaluated against every image; rules are then applied in ``rulePriority`` order
  (lowest first), and an image is expired by exactly one or zero rules;
- an image that matches the *tagging requirements* of a rule cannot be expired by a rule with a lower
  priority; lower rules still *see* it (it counts towards their ``imageCountMoreThan``) but never mark
  it. Counting it is the stricter reading: it expires at least what ignoring it would;
- ``tagStatus``: ``untagged`` selects images without tags, ``tagged`` images with tags that match the
  rule's list, ``any`` every image;
- ``tagPrefixList`` / ``tagPatternList``: each entry must match one of the image's tags (*all*
  entries, not any); a pattern's ``*`` matches any run of characters, at most four per pattern;
- ``imageCountMoreThan``: the selected images sorted newest first by push time, those past
  ``countNumber`` expire; ``sinceImagePushed`` (``countUnit: days``): those pushed more than
  ``countNumber`` days ago expire;
- what ECR refuses when the policy is set: duplicate priorities, a tagged rule without exactly one of
  the two lists, a list on an untagged/any rule, more than one rule selecting untagged images, an
  ``any`` rule that is not last, two rules with the same prefix list, a bad count.

Time is in days. An image is its digest, push time (the first push into this repository: adding a tag
later does not change it) and tags.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_WILDCARDS = 4


class PolicyError(ValueError):
    """ECR would refuse this lifecycle policy."""


@dataclass
class Image:
    digest: str
    pushed_at: float
    tags: set[str] = field(default_factory=set)


def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", pattern)) + r"\Z")


def validate(policy: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rules in priority order, or :class:`PolicyError` naming what ECR would refuse."""
    rules = list(policy.get("rules") or [])
    if not rules:
        raise PolicyError("a lifecycle policy needs at least one rule")
    priorities = [rule.get("rulePriority") for rule in rules]
    if any(not isinstance(p, int) or isinstance(p, bool) or p < 1 for p in priorities):
        raise PolicyError(f"rulePriority must be a positive integer: {priorities}")
    if len(set(priorities)) != len(priorities):
        raise PolicyError(f"rulePriority values must be unique: {priorities}")
    ordered = sorted(rules, key=lambda rule: rule["rulePriority"])
    prefix_lists: set[frozenset[str]] = set()
    for position, rule in enumerate(ordered):
        where = f"rule {rule['rulePriority']}"
        selection = rule.get("selection") or {}
        status = selection.get("tagStatus")
        lists = [key for key in ("tagPrefixList", "tagPatternList") if key in selection]
        if status == "tagged":
            if len(lists) != 1 or not selection[lists[0]]:
                raise PolicyError(f"{where}: a tagged rule needs exactly one non-empty tagPrefixList or tagPatternList")
        elif status in ("untagged", "any"):
            if lists:
                raise PolicyError(f"{where}: a {status} rule takes no {lists[0]}")
            if status == "any" and position != len(ordered) - 1:
                raise PolicyError(f"{where}: the tagStatus any rule must have the highest rulePriority")
        else:
            raise PolicyError(f"{where}: tagStatus {status!r} is not tagged, untagged or any")
        for pattern in selection.get("tagPatternList", []):
            if pattern.count("*") > MAX_WILDCARDS:
                raise PolicyError(f"{where}: pattern {pattern!r} has more than {MAX_WILDCARDS} wildcards")
        if "tagPrefixList" in selection:
            prefixes = frozenset(selection["tagPrefixList"])
            if prefixes in prefix_lists:
                raise PolicyError(f"{where}: the set of rules must have unique tag prefixes ({sorted(prefixes)})")
            prefix_lists.add(prefixes)
        count = selection.get("countNumber")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise PolicyError(f"{where}: countNumber must be a positive integer, got {count!r}")
        count_type = selection.get("countType")
        if count_type == "imageCountMoreThan":
            if "countUnit" in selection:
                raise PolicyError(f"{where}: imageCountMoreThan takes no countUnit")
        elif count_type == "sinceImagePushed":
            if selection.get("countUnit") != "days":
                raise PolicyError(f"{where}: sinceImagePushed needs countUnit 'days'")
        else:
            raise PolicyError(f"{where}: countType {count_type!r} is not imageCountMoreThan or sinceImagePushed")
        if (rule.get("action") or {}).get("type") != "expire":
            raise PolicyError(f"{where}: the action type must be 'expire'")
    if sum(1 for rule in ordered if rule["selection"]["tagStatus"] == "untagged") > 1:
        raise PolicyError("only one rule may select untagged images")
    return ordered


def selects(selection: Mapping[str, Any], image: Image) -> bool:
    """Whether ``image`` meets the rule's tagging requirements."""
    status = selection["tagStatus"]
    if status == "any":
        return True
    if status == "untagged":
        return not image.tags
    if not image.tags:
        return False
    if "tagPrefixList" in selection:
        return all(any(tag.startswith(prefix) for tag in image.tags) for prefix in selection["tagPrefixList"])
    patterns = [_pattern(p) for p in selection["tagPatternList"]]
    return all(any(pattern.match(tag) for tag in image.tags) for pattern in patterns)


def expired(policy: Mapping[str, Any], images: Iterable[Image], now: float) -> set[str]:
    """The digests one run of the lifecycle policy at time ``now`` (days) expires."""
    everything = list(images)
    claimed: set[str] = set()
    gone: set[str] = set()
    for rule in validate(policy):
        selection = rule["selection"]
        matched = [image for image in everything if selects(selection, image)]
        if selection["countType"] == "imageCountMoreThan":
            newest_first = sorted(matched, key=lambda image: (-image.pushed_at, image.digest))
            beyond = newest_first[selection["countNumber"] :]
        else:
            beyond = [image for image in matched if now - image.pushed_at > selection["countNumber"]]
        gone.update(image.digest for image in beyond if image.digest not in claimed)
        claimed.update(image.digest for image in matched)
    return gone
