"""The shape of the code: qa/ is layers of sub-packages (docs/design.md draws them), imports point down,
modules stay small, and the flag parsing a command starts with loads no torch."""

import ast
import subprocess
import sys
from dataclasses import fields, is_dataclass

from helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "qa"
BASE = {"qa", "qa.errors", "qa.files", "qa.text", "qa.hub"}
# Each sub-package's layer; a module may import its own package, the base modules and lower layers.
LAYERS = {"config": 1, "data": 2, "model": 2, "runtime": 2, "eval": 3, "train": 4, "serve": 4, "api": 4, "commands": 5}


def module_name(path):
    return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")


def qa_imports():
    """{module: the qa modules it imports anywhere in its file, function-level imports included}."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qa"):
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names if alias.name.startswith("qa"))
        graph[module_name(path)] = imported
    return {name: sorted(imported & set(graph) - {name}) for name, imported in graph.items()}


def package_of(module):
    return "base" if module in BASE else module.split(".")[1]


def layer_of(module):
    return 0 if module in BASE else LAYERS[package_of(module)]


def test_every_module_sits_in_a_known_layer():
    graph = qa_imports()
    assert "qa.eval.decoding" in graph["qa.eval.evaluator"]  # the graph is really read
    assert {package_of(module) for module in graph} == {"base", *LAYERS}
    top_level = {module_name(path) for path in PACKAGE.glob("*.py")}
    assert top_level == BASE  # every base module is known and exists: a new one is a decision, made here


def layering_violations(graph):
    """Imports into another package of the same or a higher layer (siblings included)."""
    wrong = []
    for module, imported in graph.items():
        for target in imported:
            if module == "qa" and target.startswith("qa.api"):
                continue  # the package's face: `from qa import pipeline`, imported lazily (qa/__init__.py)
            if package_of(module) != package_of(target) and layer_of(target) >= layer_of(module):
                wrong.append(f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})")
    return wrong


def test_imports_point_down_the_layers_and_siblings_stay_apart():
    wrong = layering_violations(qa_imports())
    assert not wrong, "\n".join(wrong)


def test_the_layering_check_catches_upward_and_sibling_imports():
    graph = {
        "qa.eval.decoding": ["qa.train.recipe", "qa.data.windows", "qa.errors"],
        "qa.data.windows": ["qa.model.loading"],
        "qa.errors": ["qa.config.cli"],
        "qa.commands.train": ["qa.train.recipe"],
    }
    assert layering_violations(graph) == [
        "qa.eval.decoding (layer 3) imports qa.train.recipe (layer 4)",
        "qa.data.windows (layer 2) imports qa.model.loading (layer 2)",
        "qa.errors (layer 0) imports qa.config.cli (layer 1)",
    ]


def test_no_module_of_qa_imports_one_that_imports_it_back():
    graph = qa_imports()
    cycles = []

    def visit(module, path):
        for imported in graph[module]:
            if imported in path:
                cycles.append(path[path.index(imported) :] + [imported])
            elif imported not in done:
                visit(imported, [*path, imported])
        done.add(module)

    done = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not cycles, cycles


def test_modules_and_dataclasses_stay_small():
    import importlib

    long_modules = [
        f"{path.relative_to(REPO_ROOT)}: {count}"
        for path in PACKAGE.rglob("*.py")
        if (count := len(path.read_text().splitlines())) > 400
    ]
    assert not long_modules, long_modules
    large = []
    for path in PACKAGE.rglob("*.py"):
        if "serve" in path.parts or "squad_v1" in path.parts:
            continue  # fastapi imports, and an `evaluate` metric script
        module = importlib.import_module(module_name(path))
        for value in vars(module).values():
            if is_dataclass(value) and isinstance(value, type) and value.__module__ == module.__name__:
                own = set(getattr(value, "__annotations__", {}))
                if len(own) > 20:
                    large.append(f"{value.__qualname__}: {len(own)} fields")
    assert not large, large


def test_no_sys_path_edits_in_qa_or_tests():
    edits = [
        str(path.relative_to(REPO_ROOT))
        for folder in ("qa", "tests")
        for path in (REPO_ROOT / folder).rglob("*.py")
        if path.name != "test_layout.py" and ("sys.path[" in path.read_text() or "sys.path.insert" in path.read_text())
    ]
    assert not edits, edits


def test_parsing_flags_and_reading_questions_load_no_torch():
    code = (
        "import sys\n"
        "import qa.config.cli, qa.config.train, qa.files, qa.text, qa.data.questions\n"
        "import qa.commands.train, qa.commands.evaluate, qa.commands.predict\n"
        "qa.commands.train.config_from_args(['--max-steps', '1'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_file_names_and_config_keys_are_spelled_in_one_module():
    # The result files' names in qa/files.py; what the weights carry (its config.json keys) in qa/model/carried.py.
    owners = {"metrics.json": "files.py", "predictions.json": "files.py", "na_prob.json": "files.py"}
    owners |= {"training_args.json": "files.py", "qa_null_threshold": "carried.py", "qa_calibration": "carried.py"}
    spelled = {}
    for path in PACKAGE.rglob("*.py"):
        for name in owners:
            if f'"{name}"' in path.read_text():
                spelled.setdefault(name, []).append(path.name)
    assert spelled == {name: [owner] for name, owner in owners.items()}, spelled


def test_atomic_writes_go_through_one_helper():
    """os.replace appears once in qa/ outside the checkpoint directory moves: in qa/files.py."""
    users = sorted(
        str(path.relative_to(REPO_ROOT))
        for path in PACKAGE.rglob("*.py")
        if "os.replace(" in path.read_text() or ".replace(path)" in path.read_text()
    )
    assert users == ["qa/files.py", "qa/train/checkpoint.py"], users


def test_train_config_groups_are_dataclasses_of_at_most_twenty_fields():
    from qa.config.train import TrainConfig

    groups = [base for base in TrainConfig.__mro__[1:] if is_dataclass(base)]
    assert len(groups) >= 5
    assert all(len(base.__annotations__) <= 20 for base in groups)
    assert sum(len(base.__annotations__) for base in groups) == len(fields(TrainConfig))


def test_every_third_party_package_qa_imports_is_declared():
    """requirements.txt, or pyproject's optional dependencies for what is imported only when asked for: no
    package reached only through another package's requirements."""
    import re
    import tomllib

    def normal(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = set()
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            declared.add(normal(re.split(r"[<>=!~\[ ;]", line.strip())[0]))
    optional = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared |= {normal(re.split(r"[<>=!~\[ ;]", entry)[0]) for entries in optional.values() for entry in entries}
    imported = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            imported.update(names)
    top = {name.split(".")[0] for name in imported} - set(sys.stdlib_module_names) - {"qa", "_typeshed"}
    needed = {normal(name) for name in top} | ({"tensorboard"} if "torch.utils.tensorboard" in imported else set())
    assert {"torch", "jinja2", "mlflow", "tensorboard"} <= needed  # the scan sees lazy imports too
    assert needed - declared == set()


def test_every_dotted_name_the_docs_and_docstrings_give_exists():
    """A `qa.module.name` written in README, docs/, bench/ or qa/'s docstrings and comments names a module,
    class, function or field that exists (renames leave no stale pointers)."""
    import dataclasses
    import importlib
    import re

    files = [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md"), *(REPO_ROOT / "bench").glob("*.py")]
    files += [*PACKAGE.rglob("*.py"), *(REPO_ROOT / name for name in ("train.py", "evaluate.py", "predict.py"))]
    named = re.compile(r"`(qa(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")

    def exists(name):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                found = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attribute in parts[cut:]:
                fields = {item.name for item in dataclasses.fields(found)} if dataclasses.is_dataclass(found) else set()
                if attribute in fields:
                    return attribute == parts[-1]
                if not hasattr(found, attribute):
                    return False
                found = getattr(found, attribute)
            return True
        return False

    assert exists("qa.eval.calibration.Calibrator.precision") and not exists("qa.metrics.import_evaluate_library")
    stale = sorted(
        f"{path.relative_to(REPO_ROOT)}: {name}"
        for path in files
        for name in set(named.findall(path.read_text()))
        if not exists(name)
    )
    assert not stale, stale
