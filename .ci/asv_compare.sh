#!/usr/bin/env bash
# Compare the asv suite of HEAD with BASE; exit 1 on a regression.
#
# Usage: .ci/asv_compare.sh BASE [HEAD]
#   BASE  revision to compare with (CI passes the parent commit).
#   HEAD  revision under test, HEAD by default. When it is the checked-out
#         commit, the working tree is measured as it is, uncommitted
#         changes included; any other revision gets a temporary worktree.
#
# Each revision runs its own asv suite against its own code: BASE runs in a
# temporary git worktree with PYTHONPATH pointing at it, and the suite
# refuses to run when `benchmarks`, `vib` or `baselines` import from another
# tree (benchmarks/asv_bench/common.py). Both runs use this tree's virtual
# environment (asv run --python=same), and their results go to a temporary
# folder, never into a tree's .asv/results.
#
# The decision is benchmarks/asv_bench/gate.py's:
#   - tracked values of the fixed-seed CPU run (test error, parameters,
#     FLOPs) fail on any relative change above 1e-9;
#   - a timed benchmark more than 1.5x slower than BASE (fastest sample
#     against fastest sample) is rerun on both revisions (asv run -b), and
#     fails only when the rerun confirms it;
#   - a benchmark that ran on BASE and fails on HEAD fails;
#   - smaller timing changes and peak memory are printed, not failed.
# When BASE has no asv suite (the commit that adds it), there is nothing to
# compare and the script exits 0.
#
# Environment: VENV_BIN, the folder with asv and python (default: .venv/bin
# of this tree).
set -euo pipefail

started=$(date +%s)
cd "$(dirname "$0")/.."
root=$(pwd)
bin=${VENV_BIN:-$root/.venv/bin}
gate="$root/benchmarks/asv_bench/gate.py"

usage() {
    echo "usage: $0 BASE [HEAD]" >&2
}

report_duration() {
    echo "asv comparison took $(( $(date +%s) - started )) s"
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    usage
    exit 2
fi
if [ ! -x "$bin/asv" ]; then
    echo "asv_compare: $bin/asv not found; run 'make test' to build .venv, or set VENV_BIN" >&2
    exit 2
fi
base=$(git rev-parse --verify --quiet "$1^{commit}") || {
    echo "asv_compare: base revision '$1' not found in $root" >&2
    exit 2
}
head=$(git rev-parse --verify --quiet "${2:-HEAD}^{commit}") || {
    echo "asv_compare: head revision '${2:-HEAD}' not found in $root" >&2
    exit 2
}

if ! git cat-file -e "$base:asv.conf.json" 2>/dev/null \
    || ! git cat-file -e "$base:benchmarks/asv_bench/__init__.py" 2>/dev/null; then
    echo "Base ${base:0:8} has no asv suite (asv.conf.json and benchmarks/asv_bench/); nothing to compare."
    report_duration
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/asv-compare.XXXXXX")
worktrees=()
cleanup() {
    for tree in "${worktrees[@]}"; do
        git worktree remove --force "$tree" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Set tree_path to a folder holding revision $2's sources, adding a worktree named $1 when needed.
# (A function, not a command substitution, so that worktrees+=() reaches cleanup.)
prepare_tree() {
    local side=$1 revision=$2
    if [ "$side" = head ] && [ "$revision" = "$(git rev-parse HEAD)" ]; then
        if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
            echo "Note: the working tree has uncommitted changes; they are measured as HEAD."
        fi
        tree_path=$root
        return
    fi
    git worktree add --detach --quiet "$work/$side-tree" "$revision"
    worktrees+=("$work/$side-tree")
    tree_path=$work/$side-tree
}

# Run the asv suite of tree $2 as commit $3 into $work/$1/results; extra arguments go to asv run.
run_suite() {
    local side=$1 tree=$2 commit=$3
    shift 3
    local log="$work/$side.log" start rc
    start=$(date +%s)
    "$bin/python" "$gate" config "$tree" "$work/$side/results" "$work/$side.conf.json"
    set +e
    # asv drops PYTHONPATH for some of its subprocesses and passes ASV_PYTHONPATH instead.
    PYTHONPATH="$tree" ASV_PYTHONPATH="$tree" "$bin/asv" --config "$work/$side.conf.json" run --python=same \
        --set-commit-hash "$commit" --record-samples "$@" >"$log" 2>&1
    rc=$?
    set -e
    # asv exits 2 when some benchmark failed; the gate judges those.
    if [ $rc -ne 0 ] && [ $rc -ne 2 ]; then
        echo "asv run of $side (${commit:0:8}) failed with exit status $rc; the end of its output:" >&2
        tail -n 40 "$log" >&2
        return 1
    fi
    echo "asv run of $side (${commit:0:8}) took $(( $(date +%s) - start )) s"
}

"$bin/asv" machine --yes >/dev/null

prepare_tree base "$base"
base_tree=$tree_path
prepare_tree head "$head"
head_tree=$tree_path
echo "Comparing head ${head:0:8} ($head_tree) with base ${base:0:8} ($base_tree)"

# A green gate must mean that a comparison happened, so a base that cannot
# run fails too. (A broken suite cannot become a base without failing this
# gate on its own commit first.)
if ! run_suite base "$base_tree" "$base"; then
    echo "asv_compare: the base suite could not run, so HEAD cannot be compared with it." >&2
    report_duration
    exit 1
fi
run_suite head "$head_tree" "$head"

verdict=0
"$bin/python" "$gate" check "$work/base/results" "$work/head/results" \
    --slowed-file "$work/slowed.txt" || verdict=$?

if [ $verdict -eq 0 ] && [ -s "$work/slowed.txt" ]; then
    pattern=$(cat "$work/slowed.txt")
    echo "Rerunning on both revisions: $pattern"
    # Twice asv's default rounds (processes per benchmark), for more samples.
    run_suite base "$base_tree" "$base" -b "$pattern" -a rounds=4
    run_suite head "$head_tree" "$head" -b "$pattern" -a rounds=4
    "$bin/python" "$gate" check "$work/base/results" "$work/head/results" \
        --confirm-slowdowns || verdict=$?
elif [ $verdict -ne 0 ] && [ -s "$work/slowed.txt" ]; then
    echo "The gate already failed, so the slowed benchmarks were not rerun."
fi

report_duration
exit $verdict
