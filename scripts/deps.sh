#!/usr/bin/env bash
# Installs what bini's build and tests need, if it is missing: Debian packages (compilers,
# protoc, the psql client, PostgreSQL for pgbench, a Java runtime and pgjdbc) and the Python
# drivers the driver tests run (pinned).
set -euo pipefail
need=()
command -v clang >/dev/null || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || need+=(libclang-dev)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v psql >/dev/null || need+=(postgresql-client)
# pgbench ships with the server package (its tests and the benches' reference server).
ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 || need+=(postgresql)
command -v java >/dev/null || need+=(default-jre-headless)
[ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
command -v python3 >/dev/null || need+=(python3 python3-pip)
# The durability test's power-cut file system (tests/support/cutfs.py) runs on FUSE.
command -v fusermount3 >/dev/null || command -v fusermount >/dev/null || need+=(fuse3)
ls /usr/lib/*/libfuse.so.2* >/dev/null 2>&1 || need+=(libfuse2)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! python3 -c 'import psycopg, asyncpg, fuse' 2>/dev/null; then
  echo "installing: psycopg, asyncpg, fusepy (pip)" >&2
  pkgs=('psycopg[binary]==3.3.9' 'asyncpg==0.32.0' 'fusepy==3.0.1')
  python3 -m pip install -q --disable-pip-version-check "${pkgs[@]}" \
    || python3 -m pip install -q --break-system-packages "${pkgs[@]}"
fi
