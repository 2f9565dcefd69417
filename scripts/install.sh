#!/usr/bin/env bash
# Installs wanbatch as a systemd service (docs/OPERATIONS.md):
#   the binary, the unit, its sysusers and tmpfiles companions, the default config
#   (never overwriting one that exists) and the docs.
#   sudo scripts/install.sh [--prefix /usr/local] [--destdir DIR] [--no-build | --build-dir DIR]
#   sudo scripts/install.sh --uninstall [--prefix /usr/local]   (keeps config, state, spool and output)
#   sudo scripts/install.sh --instance NAME [--destdir DIR]   (after an install: one more account,
#     wanbatch@NAME: /etc/wanbatch/NAME.yaml and its own state, spool and output folders)
# --destdir stages the files under DIR and touches nothing on the running system.
# The template unit wanbatch@.service is installed beside wanbatch.service.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/scripts/lib.sh"

prefix=/usr/local destdir="" build_first=1 uninstall=0 build_dir="$ROOT/build" instance=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --destdir) destdir=$2; shift 2 ;;
    --no-build) build_first=0; shift ;;
    --build-dir) build_dir=$2; build_first=0; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    --instance) instance=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

bin="$destdir$prefix/bin"
unit_dir="$destdir/etc/systemd/system"
sysusers_dir="$destdir/etc/sysusers.d"
tmpfiles_dir="$destdir/etc/tmpfiles.d"
conf_dir="$destdir/etc/wanbatch"
doc_dir="$destdir$prefix/share/doc/wanbatch"
live=0
[ -z "$destdir" ] && [ -d /run/systemd/system ] && live=1

if [ -n "$instance" ]; then
  # One more account: its config (paths of its own; never overwriting one that
  # exists) and a tmpfiles file for its folders. wanbatch@NAME runs it.
  if ! [[ "$instance" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$ ]] || [ "$instance" = wanbatch ]; then
    echo "--instance: '$instance' must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,63} and not be 'wanbatch'" >&2
    exit 2
  fi
  install -d "$conf_dir" "$tmpfiles_dir"
  if [ ! -e "$conf_dir/$instance.yaml" ]; then
    sed -e "s|/var/spool/wanbatch/|/var/spool/wanbatch/$instance/|" \
        -e "s|^state_dir: /var/lib/wanbatch|state_dir: /var/lib/wanbatch/$instance|" \
        -e "s|^output_root: /srv/wanbatch/output|output_root: /srv/wanbatch/output/$instance|" \
        -e "s|listen: \"127.0.0.1:9464\" |listen: \"\"               |" \
        "$ROOT/config/wanbatch.yaml" >"$conf_dir/$instance.yaml"
    chmod 0644 "$conf_dir/$instance.yaml"
  else
    echo "kept the existing $conf_dir/$instance.yaml"
  fi
  sed -e "s|^d /var/lib/wanbatch |d /var/lib/wanbatch/$instance |" \
      -e "s|^d /var/spool/wanbatch|d /var/spool/wanbatch/$instance|" \
      -e "s|^d /srv/wanbatch/output |d /srv/wanbatch/output/$instance |" \
      "$ROOT/systemd/wanbatch.tmpfiles" >"$tmpfiles_dir/wanbatch-$instance.conf"
  chmod 0644 "$tmpfiles_dir/wanbatch-$instance.conf"
  if [ $live -eq 1 ]; then
    systemd-tmpfiles --create "$tmpfiles_dir/wanbatch.conf" "$tmpfiles_dir/wanbatch-$instance.conf"
    echo "instance $instance: put its API key in /etc/wanbatch/$instance.segmind-api-key (chmod 600), give"
    echo "it a free metrics.listen port in /etc/wanbatch/$instance.yaml if you scrape it, then:"
    echo "  systemctl enable --now wanbatch@$instance"
  else
    echo "instance $instance staged under $destdir"
  fi
  exit 0
fi

if [ $uninstall -eq 1 ]; then
  [ $live -eq 1 ] && systemctl disable --now wanbatch.service 2>/dev/null || true
  rm -f "$bin/wanbatch" "$bin/segmind-sim" "$unit_dir/wanbatch.service" "$unit_dir/wanbatch@.service" \
    "$sysusers_dir/wanbatch.conf" \
    "$tmpfiles_dir/wanbatch.conf"
  rm -rf "$doc_dir"
  [ $live -eq 1 ] && systemctl daemon-reload || true
  echo "uninstalled; kept /etc/wanbatch, /var/lib/wanbatch, /var/spool/wanbatch and /srv/wanbatch"
  exit 0
fi

if [ $build_first -eq 1 ]; then
  ensure_packages
  build build
fi
install -d "$bin" "$unit_dir" "$sysusers_dir" "$tmpfiles_dir" "$conf_dir" "$doc_dir"
install -m 0755 "$build_dir/wanbatch" "$build_dir/segmind-sim" "$bin/"
sed "s|/usr/local/bin/wanbatch|$prefix/bin/wanbatch|; s|/usr/local/share/doc|$prefix/share/doc|" \
  "$ROOT/systemd/wanbatch.service" >"$unit_dir/wanbatch.service"
chmod 0644 "$unit_dir/wanbatch.service"
sed "s|/usr/local/bin/wanbatch|$prefix/bin/wanbatch|; s|/usr/local/share/doc|$prefix/share/doc|" \
  "$ROOT/systemd/wanbatch@.service" >"$unit_dir/wanbatch@.service"
chmod 0644 "$unit_dir/wanbatch@.service"
install -m 0644 "$ROOT/systemd/wanbatch.sysusers" "$sysusers_dir/wanbatch.conf"
install -m 0644 "$ROOT/systemd/wanbatch.tmpfiles" "$tmpfiles_dir/wanbatch.conf"
if [ ! -e "$conf_dir/wanbatch.yaml" ]; then
  install -m 0644 "$ROOT/config/wanbatch.yaml" "$conf_dir/wanbatch.yaml"
else
  echo "kept the existing $conf_dir/wanbatch.yaml (the new default is in $doc_dir/wanbatch.yaml)"
fi
install -m 0644 "$ROOT/config/wanbatch.yaml" "$ROOT"/docs/*.md "$doc_dir/"
if [ $live -eq 1 ]; then
  systemd-sysusers "$sysusers_dir/wanbatch.conf"
  systemd-tmpfiles --create "$tmpfiles_dir/wanbatch.conf"
  systemctl daemon-reload
  echo "installed. Put the API key in /etc/wanbatch/segmind-api-key (chmod 600), then:"
  echo "  systemctl enable --now wanbatch"
  echo "(more accounts: scripts/install.sh --instance NAME, then wanbatch@NAME; docs/OPERATIONS.md)"
else
  echo "staged under ${destdir:-/} (no service touched)"
fi
