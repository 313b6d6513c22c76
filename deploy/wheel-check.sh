#!/usr/bin/env bash
# The wheel works outside the checkout, and its compiled engine passes the same tests as the
# source: build it (setup.py compiles the engine with mypyc), install it in a fresh venv in a
# temp dir, start `gateway dev` from there and run `gateway smoke` against it; then run the
# whole test suite on the compiled build (`--no-tests` skips that). Run by .ci/run.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
case "$python" in  # a relative path would break once we leave the checkout
  /*) ;;
  */*) python="$PWD/$python" ;;
  *) python="$(command -v "$python")" ;;
esac
tests=yes
[ "${1:-}" = "--no-tests" ] && tests=no
work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$python" -m pip wheel --no-deps -q -w "$work/dist" "$repo"
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$work"/dist/pygateway-*.whl
# Free ports (three in a row for the mocks, then the gateway's and its admin listener's), not
# 8000-8003 or 9000, which the machine may use.
read -r port services admin < <("$python" - <<'PY'
import socket
while True:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    try:
        held = [socket.create_server(("127.0.0.1", base + i)) for i in range(5)]
    except OSError:
        continue
    for s in held:
        s.close()
    print(base + 3, base, base + 4)
    break
PY
)
cd "$work"  # not the checkout: nothing may be imported from it
"$work/venv/bin/gateway" dev --port "$port" --services-port "$services" --admin "127.0.0.1:$admin" >"$work/dev.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if "$python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/ready', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 "$pid" 2>/dev/null || { cat "$work/dev.log"; echo "wheel-check: gateway dev exited"; exit 1; }
  sleep 0.2
done
"$work/venv/bin/gateway" smoke "http://127.0.0.1:$port" || { tail -40 "$work/dev.log"; exit 1; }
echo "wheel-check: the wheel installed outside the checkout starts and passes gateway smoke"
kill -TERM "$pid"
wait "$pid" || true
pid=""

if [ "$tests" = yes ]; then
  # The suite again, on the compiled build: the wheel unpacked into a folder that goes before
  # the checkout here and in every process the tests start (tests/conftest.py).
  "$python" -m pip install -q --no-deps --target "$work/build" "$work"/dist/pygateway-*.whl
  cd "$repo"
  GATEWAY_TEST_BUILD="$work/build" PYTHONPATH="$work/build" PYTHONSAFEPATH=1 "$python" -m pytest -q
  echo "wheel-check: the whole suite passes on the compiled build"
fi
