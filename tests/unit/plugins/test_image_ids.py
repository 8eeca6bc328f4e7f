"""Tag -> id maps from docker_image_info's images (app_image and image_shipping read them)."""

from ansible_collections.gekko.platform.plugins.filter.image_ids import image_ids


def test_every_tag_of_every_image_maps_to_its_id_and_untagged_images_are_left_out():
    images = [
        {"Id": "sha256:a", "RepoTags": ["gekko/app:1", "gekko/app:latest"]},
        {"Id": "sha256:b", "RepoTags": None},
        {"Id": "sha256:c", "RepoTags": ["gekko/signals:1"]},
    ]
    assert image_ids(images) == {
        "gekko/app:1": "sha256:a",
        "gekko/app:latest": "sha256:a",
        "gekko/signals:1": "sha256:c",
    }
    assert image_ids(None) == {}
