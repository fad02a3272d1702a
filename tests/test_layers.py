"""The package's layers: corpus below tokenizers and data, the data pipeline below model code.

Every module file is parsed with ``ast`` (imports inside functions count too), and its imports
are followed through ``llm_torch`` transitively, parent packages included (importing
``llm_torch.data.cache`` runs ``llm_torch/data/__init__.py``). A layer must not reach a module
above it by any path; the failure names the chain of imports that does.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llm_torch"


def module_files() -> dict[str, Path]:
    """Every module and package of ``llm_torch``, by dotted name."""
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


MODULES = module_files()


def with_parents(name: str) -> list[str]:
    """``name`` and the packages above it that importing it runs, as far as they exist here."""
    parts = name.split(".")
    return [p for i in range(1, len(parts) + 1) if (p := ".".join(parts[:i])) in MODULES]


def imported(name: str) -> set[str]:
    """The ``llm_torch`` modules that module ``name``'s own import statements run."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: up from this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            found.update(with_parents(target))
    found.discard(name)
    return found


def first_chain(layer: str, forbidden: tuple[str, ...]) -> list[str] | None:
    """An import chain from a module of ``layer`` to one under ``forbidden``, or None."""
    start = [name for name in MODULES if name == layer or name.startswith(layer + ".")]
    assert start, f"{layer} has no modules"
    came_from: dict[str, str | None] = {}
    queue: list[str] = []
    for name in start:
        for entry in with_parents(name):
            came_from.setdefault(entry, None)
            queue.append(entry)
    while queue:
        name = queue.pop(0)
        if any(name == top or name.startswith(top + ".") for top in forbidden):
            chain = [name]
            while (parent := came_from[chain[-1]]) is not None:
                chain.append(parent)
            return chain[::-1]
        for target in sorted(imported(name)):
            if target not in came_from:
                came_from[target] = name
                queue.append(target)
    return None


MODEL_CODE = ("llm_torch.architectures", "llm_torch.engine", "llm_torch.generation")


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("llm_torch.tokenizer", ("llm_torch.data",)),
        ("llm_torch.data", MODEL_CODE),
        ("llm_torch.corpus", ("llm_torch.data", "llm_torch.tokenizer", *MODEL_CODE)),
    ],
)
def test_a_layer_imports_nothing_above_it(layer: str, forbidden: tuple[str, ...]) -> None:
    chain = first_chain(layer, forbidden)
    assert chain is None, f"{layer} reaches {chain[-1]}: {' -> '.join(chain)}"


def test_the_walk_finds_imports_the_layers_are_allowed() -> None:
    # The walk itself, on edges that exist: data reads corpora, engine imports the data layer.
    assert first_chain("llm_torch.data", ("llm_torch.corpus.sources",)) is not None
    assert first_chain("llm_torch.engine", ("llm_torch.data",)) is not None
    assert "llm_torch.data" in imported("llm_torch.data.datamodule")  # a parent package runs
