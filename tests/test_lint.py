"""House habits, enforced: ruff on the whole tree, mypy on the gateway, the benchmarks and the examples."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import ROOT


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "gateway", "services", "tests", "bench", "examples"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean_on_the_gateway_and_the_benchmarks() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "gateway", "bench", "examples"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


# The one edge that points back: the configuration validates a plugin's own settings by loading
# the plugin's class (at load time, so its errors name the field like the built-in ones).
ALLOWED_BACK_EDGES = {("gateway.config", "gateway.plugins.loading")}


def _import_graph() -> dict[str, set[str]]:
    import ast

    modules = {}
    for path in (ROOT / "gateway").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):  # TYPE_CHECKING and lazy imports too
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name and t != "gateway")
    return graph


def test_gateway_modules_import_each_other_in_one_direction() -> None:
    graph = _import_graph()
    for a, b in ALLOWED_BACK_EDGES:
        graph[a].discard(b)
    cycles = []
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_a_policys_settings_load_without_its_policy_or_the_config() -> None:
    # gateway.config imports each policy's settings, and the policies import gateway.config: a
    # policy package's __init__ that loaded its policy would make importing the config fail.
    code = (
        "import sys\n"
        "import gateway.ratelimit.settings, gateway.breaker.settings, gateway.cache.settings, "
        "gateway.identity.settings\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('gateway'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {
        "gateway", "gateway.settings", "gateway.lazy",  # (the packages' lazy exports, no imports)
        "gateway.ratelimit", "gateway.ratelimit.settings",
        "gateway.breaker", "gateway.breaker.settings", "gateway.cache", "gateway.cache.settings",
        "gateway.identity", "gateway.identity.settings",
    }
    first = subprocess.run([sys.executable, "-c", "import gateway.config, gateway.identity, gateway.breaker, "
                            "gateway.ratelimit; gateway.identity.IdentityPolicy; "
                            "gateway.breaker.CircuitBreakerPolicy; gateway.ratelimit.RateLimitPolicy"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
