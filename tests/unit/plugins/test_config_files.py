"""config_files, run as Ansible runs it (a module process reading its arguments), on real files."""

import hashlib
import json
import stat
import sys

import pytest

from .module_runner import run_module


def run(tmp_path, check=False, diff=True, **args):
    return run_module(
        "config_files", tmp_path, dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    )


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def layout(root, content="port: 1\n"):
    return {
        "directories": [{"path": str(root / "conf"), "mode": "0750"}],
        "files": [{"path": str(root / "conf" / "app.yml"), "content": content, "mode": "0640"}],
    }


def test_a_first_run_creates_everything_and_a_second_changes_nothing(tmp_path):
    first = run(tmp_path, **layout(tmp_path))
    assert first["changed"] and first["changed_paths"] == [
        str(tmp_path / "conf"),
        str(tmp_path / "conf" / "app.yml"),
    ]
    assert (tmp_path / "conf" / "app.yml").read_text() == "port: 1\n"
    assert mode(tmp_path / "conf") == 0o750 and mode(tmp_path / "conf" / "app.yml") == 0o640
    second = run(tmp_path, **layout(tmp_path))
    assert not second["changed"] and second["changed_paths"] == []
    # The checksum copy/template return, which the release record keeps.
    sha1 = hashlib.sha1(b"port: 1\n", usedforsecurity=False).hexdigest()
    assert second["checksums"] == {str(tmp_path / "conf" / "app.yml"): sha1}


def test_a_mode_changed_by_hand_is_put_back(tmp_path):
    run(tmp_path, **layout(tmp_path))
    (tmp_path / "conf" / "app.yml").chmod(0o666)
    again = run(tmp_path, **layout(tmp_path))
    assert again["changed_paths"] == [str(tmp_path / "conf" / "app.yml")]
    assert mode(tmp_path / "conf" / "app.yml") == 0o640


def test_content_that_fails_its_check_leaves_the_file_as_it_was(tmp_path):
    run(tmp_path, **layout(tmp_path))
    bad = layout(tmp_path, content="port: [\n")
    bad["files"][0]["validate"] = (
        f"{sys.executable} -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' %s"
    )
    result = run(tmp_path, **bad)
    assert result["failed"] and "failed its check, the file is unchanged" in result["msg"]
    assert (tmp_path / "conf" / "app.yml").read_text() == "port: 1\n"
    assert sorted(p.name for p in (tmp_path / "conf").iterdir()) == ["app.yml"]  # no temporary left


def test_a_secret_is_readable_by_its_owner_alone_while_checked_and_after(tmp_path):
    seen = tmp_path / "mode-while-checked"
    secret = layout(tmp_path, content="key\n")
    secret["files"][0].update(mode="0400", validate=f"sh -c 'stat -c %%a \"$1\" > {seen}' check %s")
    result = run(tmp_path, **secret)
    assert not result.get("failed"), result
    assert seen.read_text().strip() == "600"
    assert mode(tmp_path / "conf" / "app.yml") == 0o400


def test_check_mode_reports_the_changes_and_writes_nothing(tmp_path):
    run(tmp_path, **layout(tmp_path))
    result = run(tmp_path, check=True, **layout(tmp_path, content="port: 2\n"))
    assert result["changed_paths"] == [str(tmp_path / "conf" / "app.yml")]
    assert result["diff"] == [
        {
            "before_header": str(tmp_path / "conf" / "app.yml"),
            "after_header": str(tmp_path / "conf" / "app.yml"),
            "before": "port: 1\n",
            "after": "port: 2\n",
        }
    ]
    assert (tmp_path / "conf" / "app.yml").read_text() == "port: 1\n"
    fresh = run(tmp_path / "conf", check=True, **layout(tmp_path / "new"))
    assert fresh["changed"] and not (tmp_path / "new").exists()


def test_a_secret_files_diff_shows_no_content(tmp_path):
    secret = layout(tmp_path, content="password=hunter2\n")
    secret["files"][0]["diff"] = False
    result = run(tmp_path, **secret)
    assert "hunter2" not in json.dumps(result["diff"])


@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_path_of_the_wrong_kind_is_an_error(tmp_path, where):
    args = layout(tmp_path)
    if where == "file":
        (tmp_path / "conf" / "app.yml").mkdir(parents=True)
    else:
        (tmp_path / "conf").write_text("")
    result = run(tmp_path, **args)
    assert (
        result["failed"]
        and str(tmp_path / ("conf/app.yml" if where == "file" else "conf")) in result["msg"]
    )
