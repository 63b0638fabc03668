#!/usr/bin/env bash
# The host's half of ops/deploy/deploy: it is copied to ROOT/host.sh on every host and run
# over ssh, one step at a time. It never decides what to do next; the controller does.
#
#   host.sh ROOT MANAGER STEP [ARGS]
#
# ROOT: the host's folder (releases/<id>/emailverify, current -> releases/<id>, previous ->
# releases/<id>, emailverify.env with the service's settings). MANAGER: `systemd` (the unit
# ops/systemd/emailverify.service, whose ExecStart is ROOT/current/emailverify) or `process`
# (a process of its own with a pid file, for hosts without systemd, e.g. the tests').
set -euo pipefail
root=$1 manager=$2 step=$3
shift 3
env_file="$root/emailverify.env"
pid_file="$root/emailverify.pid"

settings() { # the service's settings, as the service gets them
  set -a
  # shellcheck disable=SC1090
  [ -f "$env_file" ] && . "$env_file"
  set +a
}

release_of() { # the release id a link points at, or "none"
  local target
  target=$(readlink "$root/$1" 2>/dev/null) || { echo none; return; }
  basename "$target"
}

running_pid() { # the service's pid when it runs (process manager)
  local pid
  pid=$(cat "$pid_file" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start_process() { # the process manager's start: a session of its own, its pid in the pid file
  settings
  (
    cd "$root"
    setsid "$root/current/emailverify" serve >>"$root/emailverify.log" 2>&1 </dev/null &
    echo $! >"$pid_file"
  )
}

case "$step" in
  releases) # current and previous release ids
    echo "$(release_of current) $(release_of previous)"
    ;;
  accept) # a staged upload becomes a release: releases/ID/emailverify
    id=$1
    mkdir -p "$root/releases/$id"
    chmod 0755 "$root/releases/$id/emailverify.upload"
    mv -f "$root/releases/$id/emailverify.upload" "$root/releases/$id/emailverify"
    ;;
  check | migrate) # the new release's check-config, or its migrations, with this host's settings
    id=$1
    settings
    cd "$root"
    if [ "$step" = check ]; then
      "$root/releases/$id/emailverify" check-config
    else
      "$root/releases/$id/emailverify" migrate
    fi
    ;;
  link) # current -> releases/CUR, previous -> releases/PREV ("none": no link)
    cur=$1 prev=$2
    for pair in "current:$cur" "previous:$prev"; do
      name=${pair%%:*} id=${pair#*:}
      if [ "$id" = none ]; then
        rm -f "$root/$name"
      else
        [ -x "$root/releases/$id/emailverify" ] || { echo "release $id is not on this host" >&2; exit 1; }
        ln -sfn "releases/$id" "$root/$name.new"
        mv -Tf "$root/$name.new" "$root/$name"
      fi
    done
    ;;
  stop) # drain: SIGTERM, wait up to DRAIN seconds for the graceful stop, then SIGKILL
    drain=$1
    if [ "$manager" = systemd ]; then
      systemctl stop emailverify
      exit 0
    fi
    pid=$(running_pid) || { rm -f "$pid_file"; echo "not running"; exit 0; }
    kill -TERM "$pid"
    for _ in $(seq 1 $((drain * 10))); do
      kill -0 "$pid" 2>/dev/null || { rm -f "$pid_file"; echo "stopped"; exit 0; }
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pid_file"
    echo "did not stop within ${drain}s: killed"
    ;;
  start)
    if [ "$manager" = systemd ]; then
      systemctl start emailverify
      exit 0
    fi
    if running_pid >/dev/null; then echo "already running" >&2; exit 1; fi
    start_process
    ;;
  wait-ready) # until `emailverify probe` passes or TIMEOUT seconds pass
    # A service that exits meanwhile is started again 2 s later, as systemd does for the unit
    # (Restart=on-failure, RestartSec=2s): a start refused for a passing reason (PostgreSQL
    # out of connection slots, 53300, or restarting) must not leave the host without one.
    timeout=$1
    settings
    deadline=$((SECONDS + timeout))
    why="no probe yet" restarts=0
    while [ "$SECONDS" -lt "$deadline" ]; do
      if [ "$manager" = process ] && ! running_pid >/dev/null; then
        why="the service exited: $(tail -n 1 "$root/emailverify.log" 2>/dev/null)"
        sleep 2
        [ "$SECONDS" -lt "$deadline" ] || break
        start_process
        restarts=$((restarts + 1))
        continue
      fi
      if [ "$manager" = systemd ] && systemctl is-failed -q emailverify; then
        echo "the unit failed; see journalctl -u emailverify"
        exit 1
      fi
      if why=$("$root/current/emailverify" probe 2>&1); then
        [ "$restarts" = 0 ] || echo "started again ${restarts} time(s) after it exited"
        echo "$why"
        exit 0
      fi
      sleep 0.5
    done
    echo "not ready within ${timeout}s (started again ${restarts} time(s)): ${why##*$'\n'}"
    if [ "$manager" = process ] && ! running_pid >/dev/null; then
      echo "the service does not run; its last log lines:"
      tail -n 5 "$root/emailverify.log" 2>/dev/null | sed 's/^/  /'
    fi
    exit 1
    ;;
  probe) # whether the service is ready now, once; never starts anything (for `deploy status`)
    settings
    "$root/current/emailverify" probe 2>&1 || true
    ;;
  prune) # keep only the current and previous releases
    keep_cur=$(release_of current) keep_prev=$(release_of previous)
    for dir in "$root"/releases/*/; do
      id=$(basename "$dir")
      [ "$id" = "$keep_cur" ] || [ "$id" = "$keep_prev" ] || rm -rf "$dir"
    done
    ;;
  *)
    echo "unknown step: $step" >&2
    exit 2
    ;;
esac
