# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: image_ids
short_description: Image id of each repository:tag, from docker_image_info's images
version_added: 0.1.0
author:
  - Gekko platform team (@gekko-platform)
description:
  - Takes the C(images) list that M(community.docker.docker_image_info) returns and maps each of
    their C(RepoTags) to the image's C(Id); untagged images are left out.
options:
  _input:
    description: The images, as docker_image_info returns them.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Remember the image ids
  ansible.builtin.set_fact:
    ids: "{{ found.images | gekko.platform.image_ids }}"
"""

RETURN = r"""
_value:
  description: repository:tag -> image id (C(sha256:...)).
  type: dict
"""


def image_ids(images):
    """repository:tag -> image id, for every tag of every image."""
    return {tag: image["Id"] for image in images or [] for tag in image.get("RepoTags") or []}


class FilterModule(object):
    def filters(self):
        return {"image_ids": image_ids}
