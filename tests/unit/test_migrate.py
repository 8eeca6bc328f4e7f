from importlib.resources import files

from alembic.script import ScriptDirectory

from gekko.migrate import (
    MigrationResult,
    alembic_config,
    count_between,
    format_result,
    redact,
    sqlalchemy_url,
)


def test_result_lines_match_the_contract():
    assert (
        format_result(MigrationResult(applied=2, revision="0002_x"))
        == "gekko-migrate: applied 2 revision(s), now at 0002_x"
    )
    assert format_result(MigrationResult(0, "0001_initial")) == (
        "gekko-migrate: up to date at 0001_initial"
    )


def test_url_conversion_and_redaction():
    url = "postgresql://gekko:s3cr%40t@127.0.0.1:5432/gekko"
    assert sqlalchemy_url(url) == "postgresql+asyncpg://gekko:s3cr%40t@127.0.0.1:5432/gekko"
    assert sqlalchemy_url("postgres://a@h/d") == "postgresql+asyncpg://a@h/d"
    assert "s3cr" not in redact(url) and "127.0.0.1:5432/gekko" in redact(url)


def test_packaged_scripts_form_one_chain_from_base():
    location = str(files("gekko") / "migrations")
    script = ScriptDirectory.from_config(alembic_config("postgresql://x@h/d", location))
    heads = script.get_heads()
    assert len(heads) == 1
    assert count_between(script, None, heads[0]) == len(list(script.walk_revisions()))
    assert count_between(script, heads[0], heads[0]) == 0
