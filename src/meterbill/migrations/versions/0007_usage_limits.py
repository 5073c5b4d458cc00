"""usage limits: event ids unique per user, alerts once per limit

Revision ID: 0007_usage_limits
Revises: 0006_fold

- `consumption_log`: an event id is unique per user, (user_id, event_id), not across all
  users, so one user's id can never be taken for another user's duplicate.
- `usage_alerts`: an alert is once per user, metric, month, level *and limit*, so a plan
  change's new thresholds alert again.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007_usage_limits"
down_revision: str | None = "0006_fold"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consumption_log") as batch_op:
        batch_op.drop_constraint("uq_consumption_log_event_id", type_="unique")
        batch_op.create_unique_constraint("uq_consumption_log_user_event", ["user_id", "event_id"])
    with op.batch_alter_table("usage_alerts") as batch_op:
        batch_op.drop_constraint("uq_usage_alerts_crossing", type_="unique")
        batch_op.create_unique_constraint(
            "uq_usage_alerts_crossing", ["user_id", "metric", "month", "level", "limit"]
        )


def downgrade() -> None:
    # Going back needs ids unique across users again: rows that share one keep the oldest.
    op.execute(
        "DELETE FROM consumption_log WHERE id NOT IN "
        "(SELECT min(id) FROM consumption_log GROUP BY event_id)"
    )
    op.execute(
        "DELETE FROM usage_alerts WHERE id NOT IN "
        "(SELECT min(id) FROM usage_alerts GROUP BY user_id, metric, month, level)"
    )
    with op.batch_alter_table("usage_alerts") as batch_op:
        batch_op.drop_constraint("uq_usage_alerts_crossing", type_="unique")
        batch_op.create_unique_constraint(
            "uq_usage_alerts_crossing", ["user_id", "metric", "month", "level"]
        )
    with op.batch_alter_table("consumption_log") as batch_op:
        batch_op.drop_constraint("uq_consumption_log_user_event", type_="unique")
        batch_op.create_unique_constraint("uq_consumption_log_event_id", ["event_id"])
