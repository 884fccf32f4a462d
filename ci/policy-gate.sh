#!/usr/bin/env bash
# The policy gate one pull request runs: check, test with a coverage threshold, diff against the
# base branch (a Markdown report for the pull-request comment), build, and sign when a key is given.
# Used by the composite action (.github/actions/policy-gate) and runnable as is in any CI:
#   POLICIES=policies BASE_REF=origin/main ci/policy-gate.sh
# Exit: 0 pass; 1 a load or check error; 2 failing tests, low coverage or unapproved decision changes.
set -uo pipefail

POLICIES="${POLICIES:-policies}"
INPUTS="${INPUTS:-$POLICIES}"              # what diff replays (space-separated): case files, decision logs
BASE_REF="${BASE_REF:-}"                   # e.g. origin/main; empty skips the diff
APPROVALS="${APPROVALS:-}"                 # YAML of intended changes (docs/diff.md)
THRESHOLD="${COVERAGE_THRESHOLD:-90}"
BUNDLE="${BUNDLE:-build/policy-bundle.tar.gz}"
OUT="${REPORT_DIR:-build/policy-gate}"     # junit, diff.md, diff.json land here
SUMMARY="${GITHUB_STEP_SUMMARY:-/dev/null}"
mkdir -p "$OUT" "$(dirname "$BUNDLE")"

status=0
run() {  # run a step, keep the worst exit code, never stop early: every report is written
  echo "::group::$*"
  "$@"
  local rc=$?
  echo "::endgroup::"
  if [ "$rc" -gt "$status" ]; then status=$rc; fi
  return 0
}

run agentgov check "$POLICIES"
run agentgov fmt --check "$POLICIES"
agentgov test "$POLICIES" --coverage --threshold "$THRESHOLD" --format junit > "$OUT/junit.xml"
rc=$?; if [ "$rc" -gt "$status" ]; then status=$rc; fi
agentgov test "$POLICIES" --coverage --threshold "$THRESHOLD" || true

if [ -n "$BASE_REF" ]; then
  replay=()
  for source in $INPUTS; do replay+=(--inputs "$source"); done
  approvals=()
  if [ -n "$APPROVALS" ]; then approvals=(--approvals "$APPROVALS"); fi
  agentgov diff --base "git:$BASE_REF:$POLICIES" --head "$POLICIES" "${replay[@]}" "${approvals[@]}" \
    --format markdown > "$OUT/diff.md"
  rc=$?
  agentgov diff --base "git:$BASE_REF:$POLICIES" --head "$POLICIES" "${replay[@]}" "${approvals[@]}" \
    --format github || true
  cat "$OUT/diff.md" >> "$SUMMARY"
  if [ "$rc" -gt "$status" ]; then status=$rc; fi
fi

if [ "$status" -eq 0 ]; then
  sign=()
  if [ -n "${SIGNING_KEY:-}" ]; then sign=(--signing-key env:SIGNING_KEY --signing-alg "${SIGNING_ALG:-RS256}" --key-id "${KEY_ID:-ci}"); fi
  run agentgov build "$POLICIES" -o "$BUNDLE" --no-test "${sign[@]}"
fi
exit "$status"
