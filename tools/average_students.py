"""Averages the weights of several students of one trajectory into one student.pt (a "soup").

    python tools/average_students.py --out runs/soup/student.pt runs/a/student.pt runs/b/student.pt

The students must share the architecture and the unified label spaces (the first file's recipe
and label spaces are kept). Score the result with ``amalgam eval <recipe> --student <out>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amalgam.errors import AmalgamError  # noqa: E402
from amalgam.students.serialize import average_students  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("students", nargs="+", type=Path, help="student.pt files to average")
    parser.add_argument("--out", type=Path, required=True, help="where to write the averaged student.pt")
    args = parser.parse_args(argv)
    try:
        average_students(args.students, args.out)
    except AmalgamError as exc:
        print(f"average_students: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: the mean of {len(args.students)} students")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
