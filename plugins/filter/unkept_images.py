# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: unkept_images
short_description: Image tags that may go to free disk space
version_added: 0.1.0
author:
  - Gekko platform team (@gekko-platform)
description:
  - Takes the C(images) list that M(community.docker.docker_host_info) returns and names the tags
    of the given repositories that are neither kept (the images of the releases kept for a
    rollback and of this deploy) nor run by a container.
options:
  _input:
    description: The images, as docker_host_info returns them (C(RepoTags)).
    type: list
    elements: dict
    required: true
  releases:
    description:
      - The release history, newest first (C(history) of M(gekko.platform.release_state)); the
        images of the first O(keep) stay.
    type: list
    elements: dict
    required: true
  keep:
    description: How many of the newest releases keep their images.
    type: int
    required: true
  also:
    description: Further repository:tag references that stay (what this deploy runs).
    type: list
    elements: str
    required: true
  containers:
    description: The containers, as docker_host_info returns them (C(Image)).
    type: list
    elements: dict
    required: true
  repositories:
    description: The repositories whose tags may go.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Remove the application images of older releases
  community.docker.docker_image:
    name: "{{ item }}"
    state: absent
  loop: >-
    {{ found.images | gekko.platform.unkept_images(state.history, 3, ['gekko/app:abc'],
       found.containers, ['gekko/app']) }}
"""

RETURN = r"""
_value:
  description: The repository:tag references that may be removed, sorted.
  type: list
  elements: str
"""


def kept_references(releases, keep):
    """The repository:tag of every image of the newest `keep` releases ("ref@id" -> "ref")."""
    return {
        ref.split("@", 1)[0]
        for release in (releases or [])[: int(keep)]
        for ref in (release.get("images") or {}).values()
    }


def unkept_images(images, releases, keep, also, containers, repositories):
    """Tags of `repositories` that no kept release or `also` names and no container runs."""
    stay = kept_references(releases, keep) | set(also) | {c.get("Image") for c in containers or []}
    wanted = set(repositories)
    return sorted(
        tag
        for image in images or []
        for tag in image.get("RepoTags") or []
        if tag.rsplit(":", 1)[0] in wanted and tag not in stay
    )


class FilterModule(object):
    def filters(self):
        return {"unkept_images": unkept_images}
