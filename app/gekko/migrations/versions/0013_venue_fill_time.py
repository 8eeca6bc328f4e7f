"""When a venue position's last fill was recorded: its price values the position until the
venue's feed has a newer one.

Revision ID: 0013_venue_fill_time
Revises: 0012_venue_fills
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013_venue_fill_time"
down_revision: str | None = "0012_venue_fills"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The time trading recorded the fill (its venue_order.filled event), not when the portfolio
    # booked it: a consumer running behind would otherwise date an old fill's price after newer
    # feed prices. Positions booked before this revision keep their booking time.
    op.execute("ALTER TABLE portfolio.venue_positions ADD COLUMN last_fill_at timestamptz")
    op.execute("UPDATE portfolio.venue_positions SET last_fill_at = updated_at WHERE fills > 0")
    # A portfolio of the previous release (during a rolling deploy, or after a rollback, which
    # leaves the schema as it is) books fills without the column: the booking's time then.
    op.execute(
        """
        CREATE FUNCTION portfolio.venue_fill_time() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.fills > OLD.fills AND NEW.last_fill_at IS NOT DISTINCT FROM OLD.last_fill_at
            THEN
                NEW.last_fill_at := now();
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER venue_fill_time BEFORE UPDATE ON portfolio.venue_positions "
        "FOR EACH ROW EXECUTE FUNCTION portfolio.venue_fill_time()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER venue_fill_time ON portfolio.venue_positions")
    op.execute("DROP FUNCTION portfolio.venue_fill_time()")
    op.execute("ALTER TABLE portfolio.venue_positions DROP COLUMN last_fill_at")
