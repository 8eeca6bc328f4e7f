"""Print line and branch coverage separately (coverage's TOTAL mixes the two).

python tests/coverage_summary.py .build/coverage/coverage.json
"""

import json
import sys


def percent(covered: int, total: int) -> str:
    return f"{100 * covered / total:.1f}% ({covered}/{total})" if total else "n/a"


def main(path: str) -> None:
    totals = json.loads(open(path).read())["totals"]
    lines = percent(totals["covered_lines"], totals["num_statements"])
    branches = percent(totals["covered_branches"], totals["num_branches"])
    print(f"coverage of app/ and plugins/: lines {lines}, branches {branches}")


if __name__ == "__main__":
    main(sys.argv[1])
