#!/usr/bin/env bash
# The units as installed: stages scripts/install.sh into a temporary root, checks the
# files, `systemd-analyze verify` and a security exposure of 1.5 or lower, for
# wanbatch.service and for an instance of the template wanbatch@.service; and
# `install.sh --instance` (an account's config and folders).
# Exit 77 (skipped) where systemd-analyze is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD=$1
command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing: skipped"; exit 77; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
bash "$ROOT/scripts/install.sh" --build-dir "$BUILD" --destdir "$stage" --prefix /opt/wb >/dev/null
for f in opt/wb/bin/wanbatch etc/systemd/system/wanbatch.service etc/sysusers.d/wanbatch.conf \
         etc/tmpfiles.d/wanbatch.conf etc/wanbatch/wanbatch.yaml opt/wb/share/doc/wanbatch/OPERATIONS.md; do
  [ -e "$stage/$f" ] || { echo "missing after install: $f"; exit 1; }
done
grep -q "^ExecStart=/opt/wb/bin/wanbatch " "$stage/etc/systemd/system/wanbatch.service"
# verify needs the binary where ExecStart says: check a copy that points into the stage.
sed "s|/opt/wb/bin/wanbatch|$stage/opt/wb/bin/wanbatch|" "$stage/etc/systemd/system/wanbatch.service" \
  >"$stage/wanbatch.service"
systemd-analyze verify "$stage/wanbatch.service"
score=$(systemd-analyze security --offline=yes "$stage/wanbatch.service" 2>/dev/null |
  sed -n 's/.*Overall exposure level for wanbatch.service: \([0-9.]*\).*/\1/p')
echo "exposure $score"
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 1.5) }' || { echo "exposure $score is over 1.5"; exit 1; }
# The template unit, one instance per account: verified and scored like the main unit.
[ -e "$stage/etc/systemd/system/wanbatch@.service" ] || { echo "missing after install: wanbatch@.service"; exit 1; }
grep -q '^ExecStart=/opt/wb/bin/wanbatch --config /etc/wanbatch/%i.yaml daemon$' "$stage/etc/systemd/system/wanbatch@.service"
grep -q '^LoadCredential=segmind-api-key:/etc/wanbatch/%i.segmind-api-key$' "$stage/etc/systemd/system/wanbatch@.service"
mkdir "$stage/template"
sed "s|/opt/wb/bin/wanbatch|$stage/opt/wb/bin/wanbatch|" "$stage/etc/systemd/system/wanbatch@.service" \
  >"$stage/template/wanbatch@.service"
systemd-analyze verify "$stage/template/wanbatch@studio-a.service"
iscore=$(systemd-analyze security --offline=yes "$stage/template/wanbatch@studio-a.service" 2>/dev/null |
  sed -n 's/.*Overall exposure level for wanbatch@studio-a.service: \([0-9.]*\).*/\1/p')
echo "instance exposure $iscore"
awk -v s="$iscore" 'BEGIN { exit !(s != "" && s <= 1.5) }' || { echo "instance exposure $iscore is over 1.5"; exit 1; }
# An instance's config and folders: paths of its own, valid as written.
bash "$ROOT/scripts/install.sh" --instance studio-a --destdir "$stage" >/dev/null
conf="$stage/etc/wanbatch/studio-a.yaml"
grep -q '^state_dir: /var/lib/wanbatch/studio-a$' "$conf"
grep -q 'incoming: /var/spool/wanbatch/studio-a/incoming' "$conf"
grep -q '^output_root: /srv/wanbatch/output/studio-a$' "$conf"
grep -q '^d /var/spool/wanbatch/studio-a/incoming 3775 ' "$stage/etc/tmpfiles.d/wanbatch-studio-a.conf"
grep -q '^d /var/lib/wanbatch/studio-a ' "$stage/etc/tmpfiles.d/wanbatch-studio-a.conf"
"$BUILD/wanbatch" --config "$conf" validate "$ROOT/examples/lakeside.yaml" >/dev/null 2>&1 || [ $? -eq 1 ]
if bash "$ROOT/scripts/install.sh" --instance ../evil --destdir "$stage" 2>/dev/null; then
  echo "install.sh --instance took the name ../evil"; exit 1
fi
# The daemon's config default is valid as installed.
"$BUILD/wanbatch" --config "$stage/etc/wanbatch/wanbatch.yaml" validate "$ROOT/examples/lakeside.yaml" >/dev/null 2>&1 ||
  [ $? -eq 1 ]  # input roots of the default config do not hold the examples: exit 1 is the right answer
bash "$ROOT/scripts/install.sh" --uninstall --destdir "$stage" --prefix /opt/wb >/dev/null
[ ! -e "$stage/opt/wb/bin/wanbatch" ] && [ -e "$stage/etc/wanbatch/wanbatch.yaml" ]
[ ! -e "$stage/etc/systemd/system/wanbatch@.service" ] && [ -e "$stage/etc/wanbatch/studio-a.yaml" ]
echo "ok"
