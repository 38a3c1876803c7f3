#!/bin/sh
# The chart's quickstart Redis (NOT FOR PRODUCTION): the password from a file (kept off the
# command line), no persistence beyond the pod.
set -eu
: "${REDIS_PASSWORD_FILE:?}"
umask 077
{
  echo "bind 0.0.0.0 -::*"
  echo "port 6379"
  echo "dir /data"
  echo "save \"\""
  echo "appendonly no"
  printf 'requirepass "%s"\n' "$(cat "$REDIS_PASSWORD_FILE")"
} >/data/redis.conf
exec redis-server /data/redis.conf
