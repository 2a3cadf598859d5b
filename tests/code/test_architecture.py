"""The package's shape: the layer contract (import-linter, pyproject.toml) holds, and no module import
cycle exists, counting imports inside functions too (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_module_import_graph_has_no_cycles():
    import grimp

    graph = grimp.build_graph("backdrop")
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    # a package's __init__ importing its own submodules is not a cycle between modules
    edges = {m: {d for d in deps if not (m.startswith(d + ".") or d.startswith(m + "."))}
             for m, deps in edges.items()}
    assert len(edges) > 50
    assert _cycles(edges) == []


def test_layer_contracts_hold():
    import tomllib

    from importlinter.application import use_cases
    from importlinter.configuration import configure

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert {c["type"] for c in contracts} >= {"layers", "independence"}
    configure()
    # the use case, not importlinter.cli: the CLI reconfigures logging for the whole process
    options = use_cases.read_user_options(config_filename=str(ROOT / "pyproject.toml"))
    use_cases._register_contract_types(options)  # what `lint-imports` does first (import-linter 2.16, pinned)
    report = use_cases.create_report(options, cache_dir=None)
    checks = list(report.get_contracts_and_checks())
    assert len(checks) == len(contracts)
    broken = {contract.name: [str(d) for d in check.metadata.get("invalid_dependencies", [])] or check.metadata
              for contract, check in checks if not check.kept}
    assert broken == {}
