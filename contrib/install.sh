#!/usr/bin/env bash
# usage: contrib/install.sh install|uninstall   (what `sudo make install` / `make uninstall` run)
#
# install: a virtualenv of PYTHON (the distro's /usr/bin/python3) in PREFIX_VENV with a
# non-editable copy of this checkout in it (Debian 12 and Ubuntu 24.04 refuse a system-wide
# `pip install`, PEP 668), the link BINDIR/relman to its console script, relman@.service in
# UNITDIR with ExecStart naming that link, the logrotate file in LOGROTATEDIR and the man
# pages in MANDIR, all readable by the deploy user whatever root's umask. Run again, it
# upgrades in place. What it put there is listed in PREFIX_VENV/.relman-install (path and
# sha256), which is all that uninstall removes: a listed file edited since (the logrotate
# file's path and user) is kept, and /etc/relman and app roots are never listed.
#
# A file already there is taken over only when it is identical to the one to install (an
# earlier copy by hand); anything else in the way is left alone with a warning, or, for
# BINDIR/relman and PREFIX_VENV, stops the install before it changes anything.
#
# Paths come from the environment (the Makefile passes its variables). They are where relman
# runs from, not a staging area: a virtualenv cannot be moved (its scripts name their python),
# so DESTDIR is refused; INSTALL_ROOT in the Makefile puts everything under one directory.
set -euo pipefail
umask 022   # root's may be 077: the deploy user runs BINDIR/relman and reads the man pages

SRC=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
PREFIX_VENV=${PREFIX_VENV:-/opt/relman}
BINDIR=${BINDIR:-/usr/local/bin}
UNITDIR=${UNITDIR:-/etc/systemd/system}
LOGROTATEDIR=${LOGROTATEDIR:-/etc/logrotate.d}
MANDIR=${MANDIR:-/usr/local/share/man}
MANIFEST=$PREFIX_VENV/.relman-install
UNIT_EXEC=/usr/local/bin/relman   # what contrib/systemd/relman@.service's ExecStart names
SYSTEMD_UNIT_DIRS=" /etc/systemd/system /run/systemd/system /usr/local/lib/systemd/system \
/usr/lib/systemd/system /lib/systemd/system "

die() { echo "relman install: $*" >&2; exit 1; }
warn() { echo "relman install: warning: $*" >&2; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

check_paths() {
  [ -z "${DESTDIR:-}" ] || die "DESTDIR is not supported: a virtualenv cannot be moved once" \
    "made; set INSTALL_ROOT (or PREFIX_VENV, BINDIR, ...) to where relman will run from"
  local name value
  for name in PREFIX_VENV BINDIR UNITDIR LOGROTATEDIR MANDIR; do
    value=${!name}
    # Absolute and plain: the unit's ExecStart and the manifest hold them unquoted.
    [[ $value =~ ^/[A-Za-z0-9._/+@-]*[A-Za-z0-9._+@-]$ ]] || die "$name=$value: want an" \
      "absolute path of letters, digits and ._+@- (not / itself)"
  done
}

# The nearest existing ancestor of $1 (itself if it exists).
existing() { local p=$1; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; echo "$p"; }

check_writable() {
  local dir
  for dir in "$PREFIX_VENV" "$BINDIR" "$UNITDIR" "$LOGROTATEDIR" "$MANDIR"; do
    [ -w "$(existing "$dir")" ] || die "cannot write $(existing "$dir") (for $dir): run it as" \
      "root (sudo make $1), or set the paths (make $1 INSTALL_ROOT=/some/dir)"
  done
}

check_python() {
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "PYTHON=$PYTHON is not a Python 3.11 or later (relman needs tomllib)"
  "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
    || die "$PYTHON cannot make a virtualenv: apt-get install python3-venv"
}

# Old manifest lines, read once: "file SHA PATH", "link TARGET PATH", "dir PATH".
declare -A OLD_FILE=() OLD_DIR=()
OLD_DIRS=()
read_manifest() {
  [ -f "$MANIFEST" ] || return 0
  local kind a b
  while read -r kind a b; do
    case $kind in
      file) OLD_FILE[$b]=$a ;;
      link) OLD_FILE[$b]=link:$a ;;
      dir) OLD_DIR[$a]=1; OLD_DIRS+=("$a") ;;
    esac
  done <"$MANIFEST"
}

NEW=()   # the new manifest's lines
record() { NEW+=("$*"); }

# mkdir -p that records each directory it creates, parents first, for uninstall's rmdir.
make_dir() {
  [ -d "$1" ] && return 0
  make_dir "$(dirname "$1")"
  mkdir "$1"
  record dir "$1"
}

# Install the content of file $1 as $2 (mode 0644), unless something else is in the way;
# $3 names the shipped file, for the warning when an edited copy is kept.
put_file() {
  local new=$1 dest=$2 shipped=$3 want have
  want=$(sha "$new")
  if [ -e "$dest" ] || [ -L "$dest" ]; then
    have=$( [ -f "$dest" ] && sha "$dest" || echo none)
    if [ "$have" != "$want" ] && [ "${OLD_FILE[$dest]:-}" != "$have" ]; then
      if [ -n "${OLD_FILE[$dest]:-}" ]; then
        warn "kept $dest: edited since it was installed (compare it with $shipped);" \
          "make uninstall will keep it too"
        record file "${OLD_FILE[$dest]}" "$dest"   # still ours, with the sha it had
      else
        warn "left $dest alone: make install did not put it there, and it differs from" \
          "$shipped"
      fi
      return 0
    fi
  fi
  make_dir "$(dirname "$dest")"
  install -m 0644 "$new" "$dest.relman-new"
  mv -f "$dest.relman-new" "$dest"   # a rename: readers see the old file or the new one
  record file "$want" "$dest"
  CHANGED+=("$dest")
}

make_venv() {
  if [ -f "$PREFIX_VENV/pyvenv.cfg" ]; then
    local was now
    was=$(sed -n 's/^version *= *//p' "$PREFIX_VENV/pyvenv.cfg")
    now=$("$PYTHON" -c 'import platform; print(platform.python_version())')
    if [ "$was" = "$now" ] && [ "$(sed -n 's/^home *= *//p' "$PREFIX_VENV/pyvenv.cfg")" \
         = "$("$PYTHON" -c 'import os, sys; print(os.path.dirname(sys.executable))')" ]; then
      return 0
    fi
    echo "relman install: $PREFIX_VENV was made by Python $was elsewhere; making it again"
    local listed=""
    [ ! -f "$MANIFEST" ] || listed=$(<"$MANIFEST")
    "$PYTHON" -m venv --clear "$PREFIX_VENV"
    # Put the list back at once: should pip fail now, uninstall still finds what is installed.
    [ -z "$listed" ] || printf '%s\n' "$listed" >"$MANIFEST"
  elif [ -d "$PREFIX_VENV" ]; then
    [ -z "$(ls -A "$PREFIX_VENV")" ] || die "$PREFIX_VENV exists and is not a virtualenv:" \
      "move it, or set PREFIX_VENV"
    "$PYTHON" -m venv "$PREFIX_VENV"
  else
    make_dir "$(dirname "$PREFIX_VENV")"
    "$PYTHON" -m venv "$PREFIX_VENV"
  fi
}

# Before anything changes: BINDIR/relman must be ours, or absent.
check_link() {
  local link=$BINDIR/relman
  if [ -L "$link" ] && [ "$(readlink "$link")" = "$PREFIX_VENV/bin/relman" ]; then return 0; fi
  if [ -e "$link" ] || [ -L "$link" ]; then
    die "$link exists and is not a link to $PREFIX_VENV/bin/relman" \
      "($(ls -ld "$link" | cut -c1-10)...): remove it, or set BINDIR"
  fi
  if [ -e "$PREFIX_VENV" ] && [ ! -f "$PREFIX_VENV/pyvenv.cfg" ] \
     && [ -n "$(ls -A "$PREFIX_VENV" 2>/dev/null)" ]; then
    die "$PREFIX_VENV exists and is not a virtualenv: move it, or set PREFIX_VENV"
  fi
}

# Warn when a directory on the way to $1 is closed to other users (a 0700 home or tmp dir).
check_reachable() {
  local p=$1
  while [ "$p" != / ]; do
    p=$(dirname "$p")
    [ "$(( 0$(stat -c %a "$p") & 01 ))" -eq 1 ] || {
      warn "$p is not searchable by other users: the deploy user cannot run $1"; return 0; }
  done
}

sd_booted() { [ -d /run/systemd/system ]; }   # sd_booted(3): systemd is PID 1

reload_systemd() {
  local changed
  for changed in "${CHANGED[@]}"; do
    if [[ $changed == */relman@.service && $SYSTEMD_UNIT_DIRS == *" $UNITDIR "* ]] \
       && sd_booted && [ "$(id -u)" -eq 0 ]; then
      systemctl daemon-reload
      echo "relman install: systemctl daemon-reload"
      return 0
    fi
  done
}

write_manifest() {
  printf '%s\n' "${NEW[@]}" >"$MANIFEST.new"
  mv -f "$MANIFEST.new" "$MANIFEST"
}

do_install() {
  check_paths
  check_python
  check_writable install
  check_link
  read_manifest
  CHANGED=()
  local dir
  for dir in "${OLD_DIRS[@]}"; do [ -d "$dir" ] && record dir "$dir"; done
  make_venv
  echo "relman install: pip install $SRC into $PREFIX_VENV"
  PIP_ROOT_USER_ACTION=ignore "$PREFIX_VENV/bin/python" -m pip install -q \
    --no-warn-script-location "$SRC"
  # A venv made by hand under root's umask 077 (before make install existed) opens up too.
  chmod -R go+rX,go-w "$PREFIX_VENV"
  local version
  version=$("$PREFIX_VENV/bin/relman" --version) || die "$PREFIX_VENV/bin/relman does not run"

  make_dir "$BINDIR"
  if [ ! -L "$BINDIR/relman" ]; then
    ln -sfn "$PREFIX_VENV/bin/relman" "$BINDIR/relman.relman-new"
    mv -fT "$BINDIR/relman.relman-new" "$BINDIR/relman"
  fi
  record link "$PREFIX_VENV/bin/relman" "$BINDIR/relman"

  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  sed "s|^ExecStart=$UNIT_EXEC |ExecStart=$BINDIR/relman |" \
    "$SRC/contrib/systemd/relman@.service" >"$tmp/relman@.service"
  grep -q "^ExecStart=$BINDIR/relman " "$tmp/relman@.service" \
    || die "contrib/systemd/relman@.service: no 'ExecStart=$UNIT_EXEC ' line to point at $BINDIR"
  put_file "$tmp/relman@.service" "$UNITDIR/relman@.service" \
    "contrib/systemd/relman@.service, ExecStart=$BINDIR/relman"
  put_file "$SRC/contrib/logrotate/relman" "$LOGROTATEDIR/relman" contrib/logrotate/relman
  put_file "$SRC/man/relman.1" "$MANDIR/man1/relman.1" man/relman.1
  put_file "$SRC/man/relman.toml.5" "$MANDIR/man5/relman.toml.5" man/relman.toml.5
  write_manifest
  check_reachable "$PREFIX_VENV/bin/relman"
  check_reachable "$BINDIR/relman"
  reload_systemd
  cat <<EOF
relman install: installed $version in $PREFIX_VENV, linked as $BINDIR/relman
Next steps (README, "A real deploy in five minutes"):
  /etc/relman/APP.toml (man 5 relman.toml), then as the deploy user: relman --app APP init, check
  $LOGROTATEDIR/relman: set its path to your app roots and its su user to the deploy user
  systemctl edit relman@APP  (User=, Group=);  systemctl enable --now relman@APP
  A daemon already running goes on with the old version until it is replaced (README: upgrade).
EOF
}

# Processes started from the venv (a daemon's argv[0] is its python, by the shebang): the
# venv must outlive them, since a daemon imports deploy code from it when a deploy comes.
running_from_venv() {
  local p arg0
  for p in /proc/[0-9]*; do
    arg0=$(tr '\0' '\n' <"$p/cmdline" 2>/dev/null | head -n 1) || continue
    case $arg0 in "$PREFIX_VENV"/*) echo "${p#/proc/}" ;; esac
  done
}

do_uninstall() {
  check_paths
  if [ ! -f "$MANIFEST" ]; then
    echo "relman uninstall: nothing to do: no $MANIFEST (make install did not install there)"
    return 0
  fi
  check_writable uninstall
  local pids
  pids=$(running_from_venv | tr '\n' ' ')
  [ -z "$pids" ] || die "uninstall: pid ${pids% } still run(s) from $PREFIX_VENV:" \
    "stop them first (systemctl disable --now relman@APP); nothing was removed"
  CHANGED=()
  local kind a b
  while read -r kind a b; do
    case $kind in
      file)
        if [ -f "$b" ] && [ "$(sha "$b")" = "$a" ]; then rm -f "$b"; CHANGED+=("$b")
        elif [ -e "$b" ]; then warn "kept $b: edited since it was installed"; fi ;;
      link)
        if [ -L "$b" ] && [ "$(readlink "$b")" = "$a" ]; then rm -f "$b"
        elif [ -e "$b" ] || [ -L "$b" ]; then warn "kept $b: no longer a link to $a"; fi ;;
    esac
  done <"$MANIFEST"
  read_manifest
  rm -rf "$PREFIX_VENV"
  local i
  for (( i = ${#OLD_DIRS[@]} - 1; i >= 0; i-- )); do
    rmdir "${OLD_DIRS[i]}" 2>/dev/null || true   # kept when something else is in it
  done
  reload_systemd
  echo "relman uninstall: removed $PREFIX_VENV and what make install put elsewhere" \
    "(/etc/relman and app roots are left as they are)"
}

case "${1:-}" in
  install) do_install ;;
  uninstall) do_uninstall ;;
  *) echo "usage: $0 install|uninstall" >&2; exit 2 ;;
esac
