#!/usr/bin/env bash
# The statement-deletion check cargo-mutants cannot do: for every fsync,
# directory fsync, truncation and `synced` initialisation listed in
# scripts/sync-sites.txt, neutralise that one call in place, build, run a
# fast suite, and require a test to fail. Prints a table site -> killed (by
# which test) / SURVIVED / UNVIABLE; exits 1 unless every site is killed.
#
#   bash scripts/sync-deletions.sh              # every site (~1-2 min a site on 2 cores)
#   bash scripts/sync-deletions.sh W1 R3        # only these sites
#   IQDB_MUTANTS_CI=1 bash scripts/sync-deletions.sh   # the CI slice: the sites marked `ci`,
#                                                      # durability_points tests only (~3-4 min)
#
# Sources are changed in place, one file at a time, and always restored (an
# EXIT/INT/TERM trap copies the original back); the script refuses to start
# when sources under crates/ have uncommitted changes. Logs: target/sync-deletions/<site>.log.
#
# Environment: IQDB_SYNC_TIMEOUT (seconds per suite run, default 900),
# IQDB_SYNC_SKIP_NEW=1 (without tests/durability_points.rs),
# IQDB_SYNC_BASELINE=0 skips the unmodified-tree run (default: on, off in
# CI mode, where scripts/test.sh ran the tests already).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
sites_file=scripts/sync-sites.txt
logs=target/sync-deletions
export CARGO_TERM_COLOR=never
ci=${IQDB_MUTANTS_CI:-}
timeout_s=${IQDB_SYNC_TIMEOUT:-900}
baseline=${IQDB_SYNC_BASELINE:-$([ -n "$ci" ] && echo 0 || echo 1)}

if [ -n "$(git status --porcelain -- crates)" ]; then
  echo "sync-deletions: the tree has uncommitted changes; commit or stash them first" >&2
  git status --short -- crates >&2
  exit 2
fi
mkdir -p "$logs"

# Sizes of the crash tests, kept small: this is a fast suite.
export IQDB_CRASH_RANDOM=${IQDB_CRASH_RANDOM:-4}
export IQDB_KILL9_ITERATIONS=${IQDB_KILL9_ITERATIONS:-5}

# The suite, in stages; a site is killed by the first stage that fails.
# durability_points first: its tests target these sites one by one.
stages=()
# IQDB_SYNC_SKIP_NEW=1 leaves durability_points out (to see what the
# other tests catch on their own).
if [ -e crates/crash-tests/tests/durability_points.rs ] && [ -z "${IQDB_SYNC_SKIP_NEW:-}" ]; then
  stages+=("cargo test -p iqdb-persist-crash-tests --test durability_points")
fi
if [ -z "$ci" ]; then
  stages+=(
    "cargo test -p iqdb-persist-crash-tests --test chained_faults --test policies --test io_faults --test power_loss"
    "cargo test -p iqdb-persist --lib"
  )
fi

# site_tool list|apply ID: lists the sites (ID, file, ci flag, description;
# tab-separated), or rewrites the site's file with the call neutralised.
# Every `find` text must occur exactly once in its file.
site_tool() {
  python3 - "$sites_file" "$@" <<'PY'
import sys
path, cmd = sys.argv[1], sys.argv[2]
sites, cur = [], None
for n, raw in enumerate(open(path, encoding="utf-8"), 1):
    line = raw.rstrip("\n")
    if not line.strip() or line.startswith("#"):
        continue
    key, _, rest = line.partition(" ")
    if key == "site":
        ident, _, desc = rest.partition(" ")
        cur = {"id": ident, "desc": desc, "ci": False, "file": None,
               "pairs": [{"find": [], "replace": []}]}
        sites.append(cur)
    elif cur is None:
        sys.exit(f"{path}:{n}: a field before the first `site`")
    elif key == "ci" and not rest:
        cur["ci"] = True
    elif key == "file":
        cur["file"] = rest
    elif key == "also" and not rest:
        cur["pairs"].append({"find": [], "replace": []})
    elif key in ("find", "replace"):
        cur["pairs"][-1][key].append(rest)
    else:
        sys.exit(f"{path}:{n}: unknown field {key!r}")
ids = [s["id"] for s in sites]
if len(set(ids)) != len(ids):
    sys.exit(f"{path}: duplicate site ids")
for s in sites:
    if not s["file"] or not all(p["find"] for p in s["pairs"]):
        sys.exit(f"{path}: site {s['id']} needs a file and a find (in each part)")
    text = open(s["file"], encoding="utf-8").read()
    for p in s["pairs"]:
        needle = "\n".join(p["find"]) + "\n"
        count = text.count(needle)
        if count != 1:
            sys.exit(f"{path}: site {s['id']}: the find text occurs {count} times in {s['file']} (must be once)")
        text = text.replace(needle, "".join(r + "\n" for r in p["replace"]))
    s["mutated"] = text
if cmd == "list":
    for s in sites:
        print(f"{s['id']}\t{s['file']}\t{'ci' if s['ci'] else '-'}\t{s['desc']}")
elif cmd == "apply":
    s = next((s for s in sites if s["id"] == sys.argv[3]), None)
    if s is None:
        sys.exit(f"no site {sys.argv[3]}")
    with open(s["file"], "w", encoding="utf-8") as out:
        out.write(s["mutated"])
else:
    sys.exit(f"unknown command {cmd}")
PY
}

listing=$(site_tool list)
declare -A site_file site_desc
selected=()
while IFS=$'\t' read -r id file flag desc; do
  site_file[$id]=$file
  site_desc[$id]=$desc
  if [ $# -gt 0 ]; then continue; fi
  if [ -n "$ci" ] && [ "$flag" != ci ]; then continue; fi
  selected+=("$id")
done <<< "$listing"
for id in "$@"; do
  [ -n "${site_file[$id]:-}" ] || { echo "sync-deletions: no site $id in $sites_file" >&2; exit 2; }
  selected+=("$id")
done

# The file being changed, and its original, restored on any exit.
backup=$(mktemp)
changed=""
restore() {
  if [ -n "$changed" ]; then
    cp "$backup" "$root/$changed"
    changed=""
  fi
}
suite_pid=$logs/.suite.pid
stop_suite() {
  if [ -s "$suite_pid" ]; then
    kill -TERM -- "-$(cat "$suite_pid")" 2>/dev/null || true
    rm -f "$suite_pid"
  fi
}
trap 'stop_suite; restore; rm -f "$backup"' EXIT
trap 'exit 130' INT TERM

# Runs the stages; prints "passed", or "killed <stage> <first failing tests>",
# "timeout <stage>" or "unviable" (the neutralised code does not build).
run_suite() {
  local log=$1 n=0
  : > "$log"
  for stage in "${stages[@]}"; do
    n=$((n + 1))
    if ! $stage --no-run >> "$log" 2>&1; then
      echo unviable
      return
    fi
    local rc=0
    # timeout runs in a process group of its own: remembered, so that an
    # interrupted run stops the suite too.
    timeout "$timeout_s" $stage >> "$log" 2>&1 &
    echo $! > "$suite_pid"
    wait $! || rc=$?
    rm -f "$suite_pid"
    if [ "$rc" = 124 ]; then
      echo "timeout stage-$n"
      return
    elif [ "$rc" != 0 ]; then
      local failed
      failed=$(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | head -3 | paste -sd, -)
      echo "killed stage-$n ${failed:-?}"
      return
    fi
  done
  echo passed
}

started=$(date +%s)
if [ "$baseline" = 1 ]; then
  echo "==> baseline: the unmodified tree must pass the suite"
  result=$(run_suite "$logs/baseline.log")
  if [ "$result" != passed ]; then
    echo "sync-deletions: the unmodified tree does not pass ($result); see $logs/baseline.log" >&2
    exit 2
  fi
fi

results=()
bad=0
for id in "${selected[@]}"; do
  t0=$(date +%s)
  cp "$root/${site_file[$id]}" "$backup"
  changed=${site_file[$id]}
  site_tool apply "$id"
  result=$(run_suite "$logs/$id.log")
  restore
  case $result in
    killed*|timeout*) verdict=$result ;;
    passed) verdict="SURVIVED"; bad=$((bad + 1)) ;;
    *) verdict="UNVIABLE (see $logs/$id.log)"; bad=$((bad + 1)) ;;
  esac
  line=$(printf '%-4s %-75s %s (%ss)' "$id" "${site_desc[$id]}" "$verdict" "$(( $(date +%s) - t0 ))")
  echo "$line"
  results+=("$line")
done

echo
echo "==> sync deletions: ${#selected[@]} sites, $bad not killed, $(( $(date +%s) - started ))s"
printf '%s\n' "${results[@]}"
[ "$bad" = 0 ]
