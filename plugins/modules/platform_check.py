#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: platform_check
short_description: Prove a deployed Gekko platform works, through its gateway
version_added: 0.1.0
description:
  - Waits until the gateway reports every dependency healthy and every expected service has a
    healthy instance that registered itself, checks that C(/metrics) serves Prometheus text and
    that an order without a token is refused, then places a smoke market order as a smoke user
    and reads it back from the order history; with the signals service, asks it for a prediction.
  - All steps run in one module call, so a deploy's verify phase costs about as long as the
    requests themselves.
  - A failed step fails the task with what the gateway answered and what to do about it.
author:
  - Gekko platform team (@gekko-platform)
attributes:
  check_mode:
    support: partial
    description: Can run in check_mode and return changed status prediction without modifying target.
    details: The read-only checks run; the smoke user, order and prediction are skipped.
  diff_mode:
    support: none
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
options:
  url:
    description: The gateway's base URL.
    type: str
    required: true
  services:
    description: Services that must each have at least one healthy, self-registered instance.
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds to wait for the gateway's health and the services' registration, each.
    type: int
    default: 90
  smoke_user:
    description:
      - The smoke user (created on first use, C(409) afterwards). Omit to skip the smoke trade.
    type: dict
    suboptions:
      username:
        description: Its name.
        type: str
        required: true
      email:
        description: Its e-mail address.
        type: str
        required: true
      password:
        description: Its password (never logged).
        type: str
        required: true
  symbol:
    description: The symbol of the smoke order and prediction.
    type: str
    default: BTC-USD
  signals:
    description: Also ask the signals service for a prediction.
    type: bool
    default: false
  validate_certs:
    description: Verify the gateway's TLS certificate.
    type: bool
    default: true
  ca_path:
    description:
      - The CA certificate (PEM) to verify the gateway's TLS certificate with, where it is not
        one the host's trust store knows (the collection's internal CA).
    type: path
  ops_user:
    description:
      - A viewer who signs in to read C(/services) (the deploy passes its monitor account;
        an operator or admin would need a second factor). Without it the services step sees
        C(401).
    type: dict
    suboptions:
      username:
        description: Its name.
        type: str
        required: true
      password:
        description: Its password (never logged).
        type: str
        required: true
  signing_kid:
    description:
      - The key id access tokens must now be signed with (after a key rotation). The check signs
        the smoke user in again until a token carries it, for up to O(timeout) seconds.
      - Without it, the token's key must merely be one the users service publishes.
    type: str
notes:
  - The smoke order is a real (paper) order in the smoke user's history, one per run; it does not
    count as a change. The smoke user's sessions are ended (logout) before the module returns.
"""

EXAMPLES = r"""
- name: Prove the platform answers and trades
  gekko.platform.platform_check:
    url: http://127.0.0.1:8000
    services: [users, market_data, trading, portfolio]
    smoke_user:
      username: gekko-smoke
      email: smoke@gekko.example.com
      password: "{{ smoke_password }}"
  no_log: false
"""

RETURN = r"""
health:
  description: The gateway's C(/health) answer.
  returned: always
  type: dict
services:
  description: Healthy instances per expected service.
  returned: always
  type: dict
  sample: {users: 2, trading: 2}
order:
  description: The smoke order (id, side, quantity, symbol, price, status).
  returned: when the smoke trade ran
  type: dict
signal:
  description: The smoke prediction (symbol, signal, model_version, device).
  returned: when O(signals) is true and the smoke trade ran
  type: dict
token_keys:
  description:
    - The key id (C(kid)) in the smoke user's access token and the key ids the users service
      publishes (C(/api/v1/users/.well-known/jwks.json)).
  returned: when the smoke trade ran
  type: dict
  sample: {signing_kid: 3Fq0..., published_kids: [3Fq0..., b81x...]}
seconds:
  description: How long the checks took.
  returned: always
  type: float
"""

import datetime
import json
import socket
import time
from urllib.error import HTTPError, URLError

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.gekko.platform.plugins.module_utils._platform_check import (
    CheckFailed,
    PlatformCheck,
    Response,
)


def http_client(base_url, validate_certs, timeout=10, ca_path=None):
    def request(method, path, body=None, headers=None):
        sent = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body)
            sent["Content-Type"] = "application/json"
        try:
            answer = open_url(
                base_url.rstrip("/") + path,
                method=method,
                data=data,
                headers=sent,
                timeout=timeout,
                validate_certs=validate_certs,
                ca_path=ca_path,
            )
            status = answer.getcode()
        except HTTPError as exc:  # 4xx and 5xx answers are results to check, not errors
            answer, status = exc, exc.code
        except (URLError, socket.error, ValueError) as exc:
            return Response(None, None, "", "", str(exc))
        raw = answer.read().decode("utf-8", "replace")
        content_type = answer.headers.get("Content-Type", "") if answer.headers else ""
        try:
            parsed = json.loads(raw) if "json" in content_type else None
        except ValueError:
            parsed = None
        return Response(status, parsed, raw, content_type, None)

    return request


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            services=dict(type="list", elements="str", default=[]),
            timeout=dict(type="int", default=90),
            smoke_user=dict(
                type="dict",
                options=dict(
                    username=dict(type="str", required=True),
                    email=dict(type="str", required=True),
                    password=dict(type="str", required=True, no_log=True),
                ),
            ),
            symbol=dict(type="str", default="BTC-USD"),
            signals=dict(type="bool", default=False),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            signing_kid=dict(type="str"),
            ops_user=dict(
                type="dict",
                options=dict(
                    username=dict(type="str", required=True),
                    password=dict(type="str", required=True, no_log=True),
                ),
            ),
        ),
        supports_check_mode=True,
    )
    params = module.params
    started = time.monotonic()
    client = http_client(params["url"], params["validate_certs"], ca_path=params["ca_path"])
    check = PlatformCheck(client, params["timeout"])
    result = dict(changed=False)
    try:
        result["health"] = check.health()
        result["services"] = check.services(params["services"], params["ops_user"])
        check.metrics()
        check.refuses_anonymous_orders(params["symbol"])
        if params["smoke_user"] and not module.check_mode:
            key = "deploy-smoke-" + datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y%m%dT%H%M%S%f"
            )
            auth, result["order"] = check.smoke_trade(params["smoke_user"], params["symbol"], key)
            try:
                if params["signals"]:
                    result["signal"] = check.signal(auth, params["symbol"])
                result["token_keys"] = check.token_keys(
                    params["smoke_user"], auth, params["signing_kid"]
                )
            finally:
                check.logout(auth)
    except CheckFailed as exc:
        result["seconds"] = round(time.monotonic() - started, 2)
        module.fail_json(msg="%s (%s)" % (exc, params["url"]), **result)
    result["seconds"] = round(time.monotonic() - started, 2)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
