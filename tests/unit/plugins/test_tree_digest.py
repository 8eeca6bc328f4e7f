"""The image tag digest changes with the sources and nothing else."""

import pytest
from ansible.errors import AnsibleLookupError
from ansible_collections.gekko.platform.plugins.lookup.tree_digest import digest


def _tree(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_same_content_same_digest_in_another_place(tmp_path):
    a = _tree(tmp_path / "a", {"x.py": "1", "pkg/y.py": "2"})
    b = _tree(tmp_path / "b", {"x.py": "1", "pkg/y.py": "2"})
    assert digest([str(a)]) == digest([str(b)])


def test_content_or_name_change_changes_digest(tmp_path):
    a = _tree(tmp_path / "a", {"x.py": "1"})
    before = digest([str(a)])
    (a / "x.py").write_text("2")
    assert digest([str(a)]) != before
    (a / "x.py").rename(a / "z.py")
    assert digest([str(a)]) != before


def test_caches_are_ignored(tmp_path):
    a = _tree(tmp_path / "a", {"x.py": "1"})
    before = digest([str(a)])
    _tree(a, {"__pycache__/x.cpython-311.pyc": "junk", "y.pyc": "junk", "g.egg-info/PKG": "x"})
    assert digest([str(a)]) == before


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(AnsibleLookupError, match="does not exist"):
        digest([str(tmp_path / "nope")])
