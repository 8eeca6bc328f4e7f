"""Runtime settings (rate limits, feature flags) reach running services without a restart.

They are applied with playbooks/runtime.yml, the activate step alone (a deploy applies the same
role; the no-op deploy in test_noop_deploy covers it there)."""

import json

import docker

from .conftest import OPERATOR, ansible_playbook, audit_log, recap, wait_until


def started_at() -> dict[str, str]:
    engine = docker.from_env()
    return {
        c.name: c.attrs["State"]["StartedAt"]
        for c in engine.containers.list(filters={"label": "gekko.platform/set"})
    }


def test_rate_limit_and_feature_flag_change_live_and_revert(tmp_path, gateway, trader, admin):
    before = started_at()
    extra = tmp_path / "runtime.json"
    extra.write_text(
        json.dumps(
            {
                "gekko_dynamic_config": {
                    "ratelimit_user_per_window": 150,
                    "feature.social_posts": False,
                }
            }
        )
    )
    try:
        run = ansible_playbook("runtime.yml", "-e", f"@{extra}")
        assert run.returncode == 0, run.stdout[-3000:]
        change = audit_log(gateway, admin, "settings-changed")[0]["details"]
        assert change == {
            "operator": OPERATOR,
            "ratelimit_user_per_window": "150",
            "feature.social_posts": "False",
        }

        def policy():
            headers = gateway.get("/api/v1/portfolio", headers=trader["headers"]).headers
            return "150;w=60" in headers.get("ratelimit-policy", "") and headers

        wait_until(policy, "the gateway to apply the new user limit", timeout=10)
        post = gateway.post(
            "/api/v1/social/posts", headers=trader["headers"], json={"body": "hello"}
        )
        assert post.status_code == 503
        assert "disabled" in post.json()["detail"]
        assert started_at() == before, "runtime settings must not restart containers"

        again = ansible_playbook("runtime.yml", "-e", f"@{extra}")
        assert all(h["changed"] == 0 for h in recap(again.stdout).values()), again.stdout[-2000:]
    finally:
        back = ansible_playbook("runtime.yml")
        assert back.returncode == 0, back.stdout[-3000:]
    wait_until(
        lambda: (
            "200;w=60"
            in gateway.get("/api/v1/portfolio", headers=trader["headers"]).headers.get(
                "ratelimit-policy", ""
            )
        ),
        "the env default limit again",
        timeout=10,
    )
    post = gateway.post("/api/v1/social/posts", headers=trader["headers"], json={"body": "hi"})
    assert post.status_code == 201
