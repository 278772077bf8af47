#!/bin/sh
# Back up tvflux's InfluxDB buckets with `influx backup`, plus a checksum manifest.
#
#   scripts/influx-backup.sh [--full] DIR
#
# Default: the three tvflux buckets, one `influx backup --bucket` each, in the order
# status -> bars -> trades. Each backup is a snapshot taken when it runs, so that order makes
# the restored bars hold at least everything below the restored watermarks, and the raw
# trades at least everything the bars were built from (runs after a restore rebuild the rest:
# they are idempotent). --full: `influx backup` of the whole instance instead (every bucket
# plus metadata: users, tokens, tasks, dashboards); needs an operator token.
#
# Connection (the influx CLI's own variables win, tvflux's are the fallback):
#   INFLUX_HOST   or TVFLUX_INFLUX_URL    default http://localhost:8086
#   INFLUX_TOKEN  or TVFLUX_INFLUX_TOKEN  default: the influx CLI's active config
#   INFLUX_ORG    or TVFLUX_INFLUX_ORG    default tvflux
#   TVFLUX_INFLUX_BUCKET / _BARS_BUCKET / _STATUS_BUCKET   default trades / bars / tvflux_status
#   INFLUX_CMD    the influx CLI to run, default "influx"
#
# With compose, run it where the CLI is, e.g. inside the InfluxDB container:
#   docker compose exec -T influxdb sh -s -- --help < scripts/influx-backup.sh
# (see docs/backup.md). POSIX sh, so it runs in the container's shell too.
set -eu

usage() { sed -n '2,23p' "$0" 2>/dev/null | sed 's/^# \{0,1\}//'; }

full=0
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --full) full=1; shift ;;
esac
[ $# -eq 1 ] || { echo "usage: $0 [--full] DIR" >&2; exit 2; }
dir=$1

host=${INFLUX_HOST:-${TVFLUX_INFLUX_URL:-http://localhost:8086}}
token=${INFLUX_TOKEN:-${TVFLUX_INFLUX_TOKEN:-}}
org=${INFLUX_ORG:-${TVFLUX_INFLUX_ORG:-tvflux}}
raw=${TVFLUX_INFLUX_BUCKET:-trades}
bars=${TVFLUX_INFLUX_BARS_BUCKET:-bars}
status=${TVFLUX_INFLUX_STATUS_BUCKET:-tvflux_status}
influx=${INFLUX_CMD:-influx}

if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
  echo "$dir exists and is not empty; pick a new directory" >&2
  exit 2
fi
mkdir -p "$dir"

# The token goes through the environment, never the command line (visible in ps).
if [ -n "$token" ]; then INFLUX_TOKEN=$token; export INFLUX_TOKEN; fi

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
if [ "$full" -eq 1 ]; then
  echo "influx backup (full instance) -> $dir/full" >&2
  $influx backup "$dir/full" --host "$host"
else
  for bucket in "$status" "$bars" "$raw"; do
    echo "influx backup --bucket $bucket -> $dir/$bucket" >&2
    $influx backup "$dir/$bucket" --host "$host" --org "$org" --bucket "$bucket"
  done
fi

{
  echo "format=tvflux-influx-backup/1"
  echo "created_utc=$started"
  echo "host=$host"
  echo "org=$org"
  echo "mode=$([ "$full" -eq 1 ] && echo full || echo buckets)"
  echo "buckets=$status $bars $raw"
} > "$dir/tvflux-backup.txt"

# Checksums of every file, for scripts/influx-restore.sh to verify before restoring.
(cd "$dir" && find . -type f ! -name 'MANIFEST.sha256*' | LC_ALL=C sort | sed 's|^\./||' | while IFS= read -r f; do
  sha256sum "$f"
done) > "$dir/MANIFEST.sha256.tmp"
mv "$dir/MANIFEST.sha256.tmp" "$dir/MANIFEST.sha256"
echo "backup written to $dir ($(wc -l < "$dir/MANIFEST.sha256") files, checksums in MANIFEST.sha256)" >&2
