"""Decide whether asv results of a head revision regress against a base revision.

``.ci/asv_compare.sh`` runs the asv suite of both revisions and then this
script, which reads asv's JSON result files directly (``asv compare`` exits 0
even when something got worse). The rules:

- Deterministic tracked values (``track_`` benchmarks of the ``tracked``
  module: test error, parameters and FLOPs of a fixed-seed CPU run) fail on
  any change larger than ``DETERMINISTIC_REL_TOLERANCE`` of the base value.
  The tolerance only absorbs float formatting. A real change of a count, or
  of the error on 1,000 test digits (steps of 0.1 points), is far beyond it.
- Timed benchmarks (``time_``) whose time is more than ``SLOWDOWN_FACTOR``
  times the base's are listed for a rerun. They fail only when called with
  ``--confirm-slowdowns`` after the rerun and the slowdown persists. Smaller
  changes are printed, never failed. The time compared is the fastest
  sample (asv run ``--record-samples``), because on a shared machine other
  processes only ever add time to a sample. A sleep or slower code raises
  every sample, the fastest included. Without samples, asv's median is used.
- A benchmark that ran in the base and fails in the head fails the gate.
- ``peakmem_`` and other ``track_`` values are printed only.
- A benchmark whose ``version`` differs between the revisions is redefined
  and not compared; raising ``tracked.TRACKED_VERSION`` is how a commit
  changes a tracked value on purpose.

The script needs only the standard library, except ``config``, which reads
``asv.conf.json`` with asv's own parser (the file has comments).

Example:
    python benchmarks/asv_bench/gate.py check base.json head.json --slowed-file slowed.txt
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DETERMINISTIC_REL_TOLERANCE = 1e-9
SLOWDOWN_FACTOR = 1.5
# Timing ratios outside [1 / NOTABLE_FACTOR, NOTABLE_FACTOR] are marked in the table.
NOTABLE_FACTOR = 1.1
DETERMINISTIC_PREFIX = "tracked."

EXIT_PASS = 0
EXIT_REGRESSION = 1


@dataclass
class Entry:
    """One benchmark at one parameter combination, as stored in an asv result file."""

    name: str
    params: str
    value: float | None
    version: str | None

    @property
    def label(self) -> str:
        return f"{self.name} [{self.params}]" if self.params else self.name

    @property
    def selector(self) -> str:
        """The name that asv's ``-b`` regular expressions match: ``name(param, ...)``."""
        return f"{self.name}({self.params})" if self.params else self.name


def load_results(path: Path) -> dict[tuple[str, str], Entry]:
    """Return the entries of one asv result file keyed by (benchmark name, parameters).

    A value of None is a failed benchmark, NaN a skipped one. A timed
    benchmark's value is its fastest recorded sample, when samples exist.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    columns = data["result_columns"]
    entries: dict[tuple[str, str], Entry] = {}
    for name, row in data["results"].items():
        fields = dict(zip(columns, row))
        values = fields.get("result")
        param_lists = fields.get("params") or []
        combinations = [", ".join(c) for c in itertools.product(*param_lists)] if param_lists else [""]
        if values is None:
            values = [None] * len(combinations)
        samples = fields.get("samples") or [None] * len(combinations)
        for params, value, timings in zip(combinations, values, samples):
            if _kind(name) == "time" and value is not None and timings:
                value = min(timings)
            entries[(name, params)] = Entry(name, params, value, fields.get("version"))
    return entries


def _kind(name: str) -> str:
    short = name.rsplit(".", 1)[-1]
    if name.startswith(DETERMINISTIC_PREFIX) and short.startswith("track_"):
        return "deterministic"
    if short.startswith("time_"):
        return "time"
    return "other"


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _format(value: float | None, kind: str) -> str:
    if value is None:
        return "failed"
    if isinstance(value, float) and math.isnan(value):
        return "skipped"
    if kind == "time":
        return f"{value * 1e3:.3f} ms"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass
class Verdict:
    """The rows of the comparison and what they decide."""

    rows: dict[str, list[tuple[str, str, str, str, str]]]
    failures: list[str]
    slowed: list[str]


def compare(base: dict[tuple[str, str], Entry], head: dict[tuple[str, str], Entry], confirm_slowdowns: bool) -> Verdict:
    """Compare head entries with base entries under the rules of this module's docstring."""
    verdict = Verdict(rows={"deterministic": [], "time": [], "other": []}, failures=[], slowed=[])
    for key in sorted(set(base) | set(head)):
        old, new = base.get(key), head.get(key)
        entry = new or old
        kind = _kind(entry.name)
        status = ""
        if old is None:
            status = "new"
        elif new is None:
            status = "removed"
        elif old.version != new.version:
            status = "redefined, not compared"
        elif _missing(old.value):
            status = _check_base_missing(old, new, kind, verdict)
        elif new.value is None:
            status = "FAILED in head"
            verdict.failures.append(f"{entry.label}: ran in the base but failed in the head")
        elif kind == "deterministic":
            status = _check_deterministic(old, new, verdict)
        elif kind == "time":
            status = _check_time(old, new, verdict, confirm_slowdowns)
        old_text = _format(old.value, kind) if old else "-"
        new_text = _format(new.value, kind) if new else "-"
        ratio = ""
        if old and new and not _missing(old.value) and not _missing(new.value) and old.value:
            ratio = f"{new.value / old.value:.3f}x"
        verdict.rows[kind].append((entry.label, old_text, new_text, ratio, status))
    verdict.slowed = sorted(set(verdict.slowed))
    return verdict


def _check_base_missing(old: Entry, new: Entry, kind: str, verdict: Verdict) -> str:
    if _missing(new.value):
        return ""
    if kind == "deterministic" and old.value is not None:
        verdict.failures.append(f"{new.label}: the base skipped it, the head has {new.value}")
        return "CHANGED"
    return "fixed" if old.value is None else "base skipped it"


def _check_deterministic(old: Entry, new: Entry, verdict: Verdict) -> str:
    if _missing(new.value):
        verdict.failures.append(f"{new.label}: base value {old.value}, head has none (skipped)")
        return "CHANGED"
    if math.isclose(new.value, old.value, rel_tol=DETERMINISTIC_REL_TOLERANCE, abs_tol=0.0):
        return ""
    verdict.failures.append(f"{new.label}: {old.value} -> {new.value}")
    return "CHANGED"


def _check_time(old: Entry, new: Entry, verdict: Verdict, confirm_slowdowns: bool) -> str:
    if _missing(new.value):
        return "head skipped"
    ratio = new.value / old.value
    if ratio > SLOWDOWN_FACTOR:
        if confirm_slowdowns:
            verdict.failures.append(f"{new.label}: {ratio:.2f}x slower than the base, also after a rerun")
            return f"SLOWER than {SLOWDOWN_FACTOR:g}x (confirmed)"
        verdict.slowed.append(new.selector)
        return f"slower than {SLOWDOWN_FACTOR:g}x, to be rerun"
    if ratio > NOTABLE_FACTOR:
        return "slower (below the limit)"
    if ratio < 1.0 / NOTABLE_FACTOR:
        return "faster"
    return ""


_TITLES = {
    "deterministic": f"Deterministic tracked values (fail on a relative change above {DETERMINISTIC_REL_TOLERANCE:g})",
    "time": f"Timed benchmarks, fastest sample per call (fail above {SLOWDOWN_FACTOR:g}x when a rerun confirms it)",
    "other": "Other benchmarks (printed only)",
}


def render(verdict: Verdict) -> str:
    """Return the comparison as plain-text tables, one per kind of benchmark."""
    lines = []
    for kind, rows in verdict.rows.items():
        if not rows:
            continue
        header = ("benchmark [parameters]", "base", "head", "head/base", "")
        widths = [max(len(row[i]) for row in rows + [header]) for i in range(4)]
        lines.append(_TITLES[kind])
        for row in [header] + rows:
            cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in (1, 2, 3)] + [row[4]]
            lines.append("  " + "  ".join(cells).rstrip())
        lines.append("")
    return "\n".join(lines)


def write_config(tree: Path, results_dir: Path, output: Path) -> None:
    """Write a copy of ``tree``'s asv.conf.json with absolute paths and results under ``results_dir``.

    asv resolves paths relative to the configuration file, so the copy can
    live anywhere, and the comparison's results never mix with the tree's own
    ``.asv/results``.
    """
    from asv import util

    tree = Path(tree).resolve()
    config: dict[str, Any] = util.load_json(str(tree / "asv.conf.json"), js_comments=True)
    config["repo"] = str(tree)
    config["benchmark_dir"] = str(tree / config.get("benchmark_dir", "benchmarks"))
    config["results_dir"] = str(Path(results_dir).resolve())
    config["env_dir"] = str(Path(results_dir).resolve().parent / "env")
    config["html_dir"] = str(Path(results_dir).resolve().parent / "html")
    Path(output).write_text(json.dumps(config, indent=2), encoding="utf-8")


def result_file(results_dir: Path) -> Path:
    """Return the one asv result file under ``results_dir``; raise FileNotFoundError otherwise."""
    found = [p for p in Path(results_dir).glob("*/*.json") if p.name != "machine.json"]
    if len(found) != 1:
        raise FileNotFoundError(f"expected one asv result file under {results_dir}, found {len(found)}: {found}")
    return found[0]


def rerun_pattern(selectors: list[str]) -> str:
    """Return a regular expression for asv's ``-b`` that matches exactly ``selectors``."""
    return "^(" + "|".join(re.escape(selector) for selector in selectors) + ")$"


def _command_check(args: argparse.Namespace) -> int:
    base = load_results(result_file(args.base_results))
    head = load_results(result_file(args.head_results))
    verdict = compare(base, head, confirm_slowdowns=args.confirm_slowdowns)
    print(render(verdict))

    if args.slowed_file is not None:
        args.slowed_file.write_text(rerun_pattern(verdict.slowed) if verdict.slowed else "", encoding="utf-8")
    if verdict.failures:
        print(f"REGRESSION: {len(verdict.failures)} benchmark(s) changed or failed:")
        for failure in verdict.failures:
            print(f"  - {failure}")
        return EXIT_REGRESSION
    if verdict.slowed:
        print(f"{len(verdict.slowed)} timed benchmark(s) slower than {SLOWDOWN_FACTOR:g}x; rerunning them: "
              + ", ".join(verdict.slowed))
    else:
        print("No regression.")
    return EXIT_PASS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Compare two asv result sets and decide on regressions.")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="compare head results with base results")
    check.add_argument("base_results", type=Path, help="results_dir of the base run")
    check.add_argument("head_results", type=Path, help="results_dir of the head run")
    check.add_argument("--slowed-file", type=Path, help="write the asv -b pattern of benchmarks to rerun here")
    check.add_argument("--confirm-slowdowns", action="store_true",
                       help=f"fail on timed benchmarks still above {SLOWDOWN_FACTOR:g}x (use after the rerun)")

    config = commands.add_parser("config", help="write an asv configuration with absolute paths")
    config.add_argument("tree", type=Path, help="source tree whose asv.conf.json is copied")
    config.add_argument("results_dir", type=Path, help="results_dir of the copy")
    config.add_argument("output", type=Path, help="path of the configuration file to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "config":
        write_config(args.tree, args.results_dir, args.output)
        return EXIT_PASS
    return _command_check(args)


if __name__ == "__main__":
    sys.exit(main())
