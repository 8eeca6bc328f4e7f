"""What a check run lists as drift: the task and the files or containers it names, no value."""

from ansible_collections.gekko.platform.plugins.callback.drift_report import drifted_item


def test_the_files_a_check_would_rewrite_are_named():
    found = drifted_item(
        "db-1", "Render pg_hba.conf", {"changed": True, "changed_paths": ["/etc/a"]}
    )
    assert found == {"host": "db-1", "task": "Render pg_hba.conf", "paths": ["/etc/a"]}


def test_the_containers_a_check_would_change_are_named_with_what_would_happen():
    result = {
        "changed": True,
        "actions": [
            {"container": "gekko-social", "action": "start"},
            {"container": "gekko-users", "action": "keep"},
            {"container": "gekko-trading", "action": "replace", "seconds": 4.2},
        ],
        "_ansible_item_label": "services",
    }
    assert drifted_item("svc-1", "Reconcile", result) == {
        "host": "svc-1",
        "task": "Reconcile",
        "item": "services",
        "containers": ["gekko-social: start", "gekko-trading: replace"],
    }


def test_a_hidden_result_is_listed_by_its_task_alone():
    result = {"changed": True, "_ansible_no_log": True, "item": "secret", "changed_paths": ["/x"]}
    assert drifted_item("db-1", "Render the environment files", result) == {
        "host": "db-1",
        "task": "Render the environment files",
    }
