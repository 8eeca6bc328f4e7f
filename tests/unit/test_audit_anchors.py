"""Anchors of the audit chain: parsed strictly, and a row gone or changed is named."""

import pytest

from gekko.security.audit_anchors import Anchor, anchor_problems

HEAD = bytes(range(32))


def test_an_anchor_reads_as_record_prints_it():
    anchor = Anchor.parse(f" 42:{HEAD.hex().upper()}\n")
    assert anchor == Anchor(42, HEAD)
    assert str(anchor) == f"42:{HEAD.hex()}"


@pytest.mark.parametrize(
    "text", ["", "42", f"0:{HEAD.hex()}", f"-1:{HEAD.hex()}", f"42:{HEAD.hex()[:-2]}", "42:zz"]
)
def test_a_malformed_anchor_is_refused_with_its_form(text):
    with pytest.raises(ValueError, match="ROW:HASH"):
        Anchor.parse(text)


def test_rows_gone_or_rewritten_are_named_and_matching_ones_pass():
    other = bytes(32)
    anchors = [Anchor(1, HEAD), Anchor(5, HEAD), Anchor(9, HEAD)]
    problems = anchor_problems(anchors, {1: HEAD, 5: other})
    assert problems == [
        f"row 5 no longer has its anchored hash {HEAD.hex()[:16]}...: the chain was rewritten "
        "from that row or before it",
        "row 9 is gone: the log was cut back past it",
    ]
    assert anchor_problems(anchors[:1], {1: HEAD}) == []


@pytest.mark.parametrize("action", [["record", "deploy", "--operator", "ci"], ["verify"]])
def test_the_cli_refuses_a_malformed_anchor_before_touching_the_database(
    action, monkeypatch, capsys
):
    from gekko.cli import main

    # A closed port: reaching for the database would fail differently.
    monkeypatch.setenv("GEKKO_DATABASE_URL", "postgresql://gekko_app:pw@127.0.0.1:9/gekko")
    assert main(["audit", *action, "--anchor", "12:nothex"]) == 2
    assert "'12:nothex' is not an anchor: ROW:HASH" in capsys.readouterr().err
