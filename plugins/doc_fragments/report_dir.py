# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Where the collection's callbacks write their JSON reports.
    DOCUMENTATION = r"""
options:
  report_dir:
    description: Where the JSON report is written (created if missing).
    type: path
    default: .build/reports
    env:
      - name: GEKKO_REPORT_DIR
    ini:
      - section: gekko_deploy_summary
        key: report_dir
"""
