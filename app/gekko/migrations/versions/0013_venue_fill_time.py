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


def downgrade() -> None:
    op.execute("ALTER TABLE portfolio.venue_positions DROP COLUMN last_fill_at")
