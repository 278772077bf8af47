#!/bin/sh
# Restore a backup made by scripts/influx-backup.sh with `influx restore`.
#
#   scripts/influx-restore.sh [--replace] DIR
#
# Stop tvflux first. The checksums in DIR/MANIFEST.sha256 are verified before anything is
# touched. Bucket backups are restored in the order trades -> bars -> status (watermarks
# last). A bucket that already exists is refused unless --replace is given, which deletes it
# first (its current data is lost: make a backup of it first). A --full backup is restored
# with `influx restore --full`, which replaces all data and metadata of the target instance
# (use a fresh instance). Afterwards run `tvflux influx setup` (tasks, missing buckets), then
# start tvflux: downsampling continues from the restored watermarks.
#
# Connection: the same variables as scripts/influx-backup.sh (INFLUX_HOST, INFLUX_TOKEN,
# INFLUX_ORG, TVFLUX_INFLUX_* bucket names, INFLUX_CMD).
set -eu

usage() { sed -n '2,14p' "$0" 2>/dev/null | sed 's/^# \{0,1\}//'; }

replace=0
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --replace) replace=1; shift ;;
esac
[ $# -eq 1 ] || { echo "usage: $0 [--replace] DIR" >&2; exit 2; }
dir=$1

host=${INFLUX_HOST:-${TVFLUX_INFLUX_URL:-http://localhost:8086}}
token=${INFLUX_TOKEN:-${TVFLUX_INFLUX_TOKEN:-}}
org=${INFLUX_ORG:-${TVFLUX_INFLUX_ORG:-tvflux}}
raw=${TVFLUX_INFLUX_BUCKET:-trades}
bars=${TVFLUX_INFLUX_BARS_BUCKET:-bars}
status=${TVFLUX_INFLUX_STATUS_BUCKET:-tvflux_status}
influx=${INFLUX_CMD:-influx}
if [ -n "$token" ]; then INFLUX_TOKEN=$token; export INFLUX_TOKEN; fi

[ -f "$dir/MANIFEST.sha256" ] || { echo "$dir/MANIFEST.sha256 is missing: not a tvflux InfluxDB backup" >&2; exit 1; }
if ! (cd "$dir" && sha256sum -c --quiet MANIFEST.sha256); then
  echo "$dir failed verification (files changed or missing); nothing was restored" >&2
  exit 1
fi

bucket_exists() {
  $influx bucket list --host "$host" --org "$org" --hide-headers | awk -v b="$1" '$2 == b { found = 1 } END { exit !found }'
}

if [ -d "$dir/full" ]; then
  echo "influx restore --full $dir/full (replaces everything on $host)" >&2
  $influx restore "$dir/full" --host "$host" --full
else
  for bucket in "$raw" "$bars" "$status"; do
    [ -d "$dir/$bucket" ] || { echo "$dir/$bucket is missing" >&2; exit 1; }
  done
  for bucket in "$raw" "$bars" "$status"; do
    if bucket_exists "$bucket"; then
      if [ "$replace" -ne 1 ]; then
        echo "bucket $bucket exists in org $org; pass --replace to delete it and restore the backup" >&2
        exit 1
      fi
      echo "deleting bucket $bucket" >&2
      $influx bucket delete --host "$host" --org "$org" --name "$bucket"
    fi
    echo "influx restore --bucket $bucket <- $dir/$bucket" >&2
    $influx restore "$dir/$bucket" --host "$host" --org "$org" --bucket "$bucket"
  done
fi
echo "restored; now run: tvflux influx setup   (then start tvflux)" >&2
