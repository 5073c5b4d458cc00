"""Migrations are numbered in the order they run; databases stamped with the ids two of
them had before (as shipped) still upgrade."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from meterbill.db import Database
from meterbill.migrate import RENAMED_REVISIONS, current_revision, head_revision, upgrade
from tests.usage.test_partitions import empty_database  # noqa: F401  (fixture)


def test_revisions_run_in_the_order_of_their_numbers() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from meterbill.migrate import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    chain = [s.revision for s in ScriptDirectory.from_config(config).walk_revisions()][::-1]
    assert [int(revision[:4]) for revision in chain] == list(range(1, len(chain) + 1))
    assert chain[-1] == head_revision()


@pytest.mark.parametrize("old", sorted(RENAMED_REVISIONS))
def test_a_database_stamped_with_an_old_id_upgrades(empty_database: str, old: str) -> None:  # noqa: F811
    db = Database(empty_database)
    try:
        upgrade(db.engine, RENAMED_REVISIONS[old])
        with db.engine.begin() as conn:  # as a database migrated by an earlier release
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": old})
        upgrade(db.engine)
        assert current_revision(db.engine) == head_revision()
        # Tables of the revisions after the renamed ones exist: the upgrade went through.
        assert inspect(db.engine).has_table("admin_users")
    finally:
        db.dispose()
