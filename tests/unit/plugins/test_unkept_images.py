"""Which application images a deploy short of disk space may remove."""

from ansible_collections.gekko.platform.plugins.filter.unkept_images import (
    kept_references,
    unkept_images,
)

IMAGES = [
    {"Id": "sha256:a", "RepoTags": ["gekko/app:old1"]},
    {"Id": "sha256:b", "RepoTags": ["gekko/app:kept", "gekko/app:alias"]},
    {"Id": "sha256:c", "RepoTags": ["gekko/signals:old1"]},
    {"Id": "sha256:d", "RepoTags": ["gekko/app:running"]},
    {"Id": "sha256:e", "RepoTags": ["gekko/runtime:app-1"]},
    {"Id": "sha256:f", "RepoTags": None},  # dangling: docker_prune's
    {"Id": "sha256:g", "RepoTags": ["registry:5000/gekko/app:x"]},
]


def test_only_tags_of_no_kept_release_and_no_container_go():
    releases = [
        {"images": {"app": "gekko/app:new@sha256:n"}},
        {"images": {"app": "gekko/app:kept@sha256:b", "datastore": "gekko/datastore:1"}},
        {"images": {"app": "gekko/app:old1@sha256:a", "signals": "gekko/signals:old1@sha256:c"}},
    ]
    assert kept_references(releases, 2) == {"gekko/app:new", "gekko/app:kept", "gekko/datastore:1"}
    gone = unkept_images(
        IMAGES,
        releases,
        2,
        ["gekko/app:building"],
        [{"Image": "gekko/app:running"}, {"Image": "sha256:zzz"}],
        ["gekko/app", "gekko/signals"],
    )
    # The runtime and other repositories are not this filter's; an alias of a kept image goes
    # (the image itself stays under its kept tag).
    assert gone == ["gekko/app:alias", "gekko/app:old1", "gekko/signals:old1"]


def test_nothing_goes_from_an_empty_host():
    assert unkept_images([], [], 3, [], [], ["gekko/app"]) == []
    assert kept_references(None, 3) == set()
