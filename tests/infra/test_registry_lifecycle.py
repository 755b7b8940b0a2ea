"""The ECR lifecycle policy never expires an image a stack runs, nor the one before it.

The policy JSON (:func:`infra.aws.registry.lifecycle_policy`, with each committed stack's ``ecr``
settings) runs through an evaluator of ECR's rule semantics (:mod:`tests.support.ecr_lifecycle`) over
a simulated history: a build a day for 90 days into dev's registry (an index, its platform image and
its provenance attestation, as ``docker buildx`` pushes them, tagged ``git-<n>`` on the index only),
each recorded in the dev stack; every week prod is promoted from staging and staging from dev. The
lifecycle runs twice a day: before the stacks' ``pulumi up`` (the policy still naming the previous
image) and after.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from infra.aws.registry import lifecycle_policy
from infra.images import digest_tag
from infra.promote import ROOT
from infra.schema import Ecr
from tests.support.ecr_lifecycle import Image, PolicyError, expired, selects, validate

DAYS = 90
PROMOTION_EVERY = 7
PLATFORM_MANIFESTS = 2
"""Children of each build's index: the linux/amd64 image and buildx's provenance attestation."""
STACKS = ("dev", "staging", "prod")

Policy = Callable[[int, int, str | None], dict[str, Any]]


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Registry:
    ecr: Ecr
    manifests: dict[str, Image] = field(default_factory=dict)
    deployed: str | None = None
    """The digest of the lifecycle policy in force: what the last ``pulumi up`` wrote into it."""


@dataclass
class World:
    policy: Policy
    tag_images: bool
    registries: dict[str, Registry]
    files: dict[str, list[str]] = field(default_factory=lambda: {stack: [] for stack in STACKS})
    """Each stack file's ``imageDigest`` history, the current one last."""
    children: dict[str, list[str]] = field(default_factory=dict)
    losses: list[tuple[int, str, str]] = field(default_factory=list)

    def build(self, day: int) -> str:
        index = _digest(f"index-{day}")
        self.children[index] = [_digest(f"child-{day}-{n}") for n in range(PLATFORM_MANIFESTS)]
        dev = self.registries["dev"].manifests
        dev[index] = Image(index, day, {f"git-{day:04d}"})
        for child in self.children[index]:
            dev[child] = Image(child, day)
        return index

    def _tag(self, stack: str, digest: str) -> None:
        """What :func:`infra.oci.tag_image` does: the index and each of its manifests."""
        if not self.tag_images:
            return
        manifests = self.registries[stack].manifests
        manifests[digest].tags.add(digest_tag(digest))
        for position, child in enumerate(self.children[digest]):
            manifests[child].tags.add(f"{digest_tag(digest)}.{position}")

    def record(self, stack: str, digest: str) -> None:
        self._tag(stack, digest)
        self.files[stack].append(digest)

    def promote(self, source: str, target: str, day: int) -> None:
        digest = self.files[source][-1]
        manifests = self.registries[target].manifests
        for manifest in (digest, *self.children[digest]):
            manifests.setdefault(manifest, Image(manifest, day))  # a copy is pushed now; a present one stays
        self.record(target, digest)

    def deploy(self) -> None:
        for stack, history in self.files.items():
            if history:
                self.registries[stack].deployed = history[-1]

    def lifecycle(self, now: float) -> None:
        for registry in self.registries.values():
            policy = self.policy(registry.ecr.untagged_expiry_days, registry.ecr.keep_tagged_images, registry.deployed)
            for digest in expired(policy, registry.manifests.values(), now):
                del registry.manifests[digest]

    def check(self, day: int) -> None:
        for stack, history in self.files.items():
            for which, digest in zip(("runs", "ran before"), reversed(history[-2:]), strict=False):
                missing = {digest, *self.children[digest]} - set(self.registries[stack].manifests)
                if missing:
                    self.losses.append((day, stack, which))


def _world(policy: Policy = lifecycle_policy, *, tag_images: bool = True) -> World:
    registries = {}
    for stack in STACKS:
        config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        registries[stack] = Registry(Ecr.model_validate(config.get("purchase-classifier:ecr", {})))
    return World(policy, tag_images, registries)


def simulate(world: World, *, follow_builds: bool = True) -> World:
    """90 days of builds and weekly promotions; ``follow_builds=False``: dev keeps day 0's build."""
    for day in range(DAYS):
        build = world.build(day)
        if follow_builds or day == 0:
            world.record("dev", build)
        if day % PROMOTION_EVERY == PROMOTION_EVERY - 1:
            if world.files["staging"]:
                world.promote("staging", "prod", day)
            world.promote("dev", "staging", day)
        world.lifecycle(day + 0.25)  # the policy in force still names yesterday's image
        world.deploy()
        world.lifecycle(day + 0.75)
        world.check(day)
    return world


def test_every_stack_keeps_the_image_it_runs_and_the_one_before_for_90_days() -> None:
    world = simulate(_world())

    assert world.losses == []
    assert len(world.files["prod"]) == DAYS // PROMOTION_EVERY - 1
    # The policy does expire: dev holds its newest builds, not all 90.
    dev = world.registries["dev"]
    builds_kept = [image for image in dev.manifests.values() if any(t.startswith("git-") for t in image.tags)]
    assert len(builds_kept) < DAYS / 2


def test_untagged_promoted_images_expire_in_the_target() -> None:
    # What promotion did before images were tagged: an untagged copy expires untaggedExpiryDays after
    # the promotion, taking the rollback target (and, with a slower release, the running image).
    world = simulate(_world(tag_images=False))

    first_loss = {stack: day for day, stack, _ in reversed(world.losses)}
    # Staging expires untagged images after 7 days: a week after each promotion its rollback target is gone.
    assert world.registries["staging"].ecr.untagged_expiry_days <= PROMOTION_EVERY
    assert first_loss["staging"] == 2 * PROMOTION_EVERY - 1  # the second promotion's day


def test_a_stack_that_stops_following_builds_keeps_its_image() -> None:
    # dev stays on day 0's build while 89 newer builds land: more than keepTaggedImages.
    world = simulate(_world(), follow_builds=False)
    assert [loss for loss in world.losses if loss[1] == "dev" and loss[2] == "runs"] == []

    # Without the running-image rule, counting alone expires it.
    def count_only(untagged: int, keep: int, running: str | None) -> dict[str, Any]:
        return lifecycle_policy(untagged, keep)

    world = simulate(_world(count_only), follow_builds=False)
    assert ("dev", "runs") in {(stack, which) for _, stack, which in world.losses}


@pytest.mark.parametrize("stack", STACKS)
def test_each_stack_policy_is_one_ecr_accepts(stack: str) -> None:
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    ecr = Ecr.model_validate(config.get("purchase-classifier:ecr", {}))
    for running in (None, _digest("running")):
        rules = validate(lifecycle_policy(ecr.untagged_expiry_days, ecr.keep_tagged_images, running))
        assert [rule["rulePriority"] for rule in rules] == sorted(rule["rulePriority"] for rule in rules)


# -- the evaluator itself -------------------------------------------------------------------------


def _rule(priority: int, status: str, count: int, **selection: Any) -> dict[str, Any]:
    return {
        "rulePriority": priority,
        "selection": {"tagStatus": status, "countType": "imageCountMoreThan", "countNumber": count, **selection},
        "action": {"type": "expire"},
    }


def test_an_image_matched_by_a_higher_rule_is_counted_but_never_expired_by_a_lower_one() -> None:
    images = [Image("keep", 3, {"keep-1"}), Image("b", 2, {"b"}), Image("c", 1, {"c"}), Image("old", 0, {"keep-0"})]
    policy = {
        "rules": [
            _rule(1, "tagged", 9999, tagPrefixList=["keep"]),
            _rule(2, "tagged", 2, tagPatternList=["*"]),
        ]
    }
    # Rule 2 sees keep-1, b, c, keep-0 newest first and marks c and keep-0; keep-0 is rule 1's.
    assert expired(policy, images, now=10) == {"c"}


def test_tag_lists_need_every_entry_matched_and_patterns_use_wildcards() -> None:
    both = {"tagStatus": "tagged", "tagPatternList": ["prod*", "v*.*"]}
    assert selects(both, Image("a", 0, {"prod-eu", "v1.2"}))
    assert not selects(both, Image("b", 0, {"prod-eu"}))
    assert not selects({"tagStatus": "tagged", "tagPatternList": ["prod"]}, Image("c", 0, {"prod-eu"}))
    assert selects({"tagStatus": "tagged", "tagPrefixList": ["prod"]}, Image("d", 0, {"prod-eu"}))
    assert not selects({"tagStatus": "tagged", "tagPrefixList": ["prod"]}, Image("e", 0, set()))
    assert selects({"tagStatus": "untagged"}, Image("f", 0, set()))
    assert selects({"tagStatus": "any"}, Image("g", 0, {"x"}))


def test_age_rules_expire_what_was_pushed_more_than_n_days_ago() -> None:
    rule = _rule(1, "untagged", 7)
    rule["selection"] |= {"countType": "sinceImagePushed", "countUnit": "days"}
    images = [Image("new", 5), Image("edge", 3), Image("old", 2.5), Image("tagged", 0, {"t"})]
    assert expired({"rules": [rule]}, images, now=10) == {"old"}


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([_rule(1, "any", 5), _rule(2, "untagged", 5)], "any rule must have the highest rulePriority"),
        ([_rule(1, "untagged", 5), _rule(2, "untagged", 9)], "only one rule may select untagged"),
        ([_rule(1, "tagged", 5)], "exactly one non-empty tagPrefixList or tagPatternList"),
        ([_rule(1, "tagged", 5, tagPrefixList=["a"], tagPatternList=["a*"])], "exactly one"),
        ([_rule(1, "untagged", 5, tagPrefixList=["a"])], "untagged rule takes no tagPrefixList"),
        ([_rule(1, "tagged", 5, tagPrefixList=["a"]), _rule(2, "tagged", 9, tagPrefixList=["a"])], "unique tag"),
        ([_rule(1, "tagged", 5, tagPatternList=["*a*b*c*d*e"])], "more than 4 wildcards"),
        ([_rule(1, "untagged", 0)], "countNumber must be a positive integer"),
        ([_rule(1, "untagged", 5), _rule(1, "tagged", 5, tagPrefixList=["a"])], "must be unique"),
    ],
)
def test_policies_ecr_refuses_are_refused(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        validate({"rules": rules})
