"""The shape of the code: imports point one way, and the flag parsing a command starts with loads no torch."""

import ast
import subprocess
import sys

from helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "qa"


def qa_imports():
    """{module: the qa modules it imports anywhere in its file, function-level imports included}."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qa"):
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names if alias.name.startswith("qa"))
        graph[name] = imported
    return {name: sorted(imported & set(graph) - {name}) for name, imported in graph.items()}


def test_no_module_of_qa_imports_one_that_imports_it_back():
    graph = qa_imports()
    assert "qa.windows" in graph and "qa.decoding" in graph["qa.evaluation"]  # the graph is really read
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


def test_commands_depend_on_the_library_and_never_the_reverse():
    graph = qa_imports()
    commands = {name for name in graph if name.endswith("_cmd")}
    assert commands == {"qa.train_cmd", "qa.evaluate_cmd", "qa.predict_cmd"}
    for module, imported in graph.items():
        if module not in commands:
            assert not commands & set(imported), f"{module} imports a command module: {imported}"


def test_parsing_flags_and_reading_questions_load_no_torch():
    code = (
        "import sys\n"
        "import qa.cli, qa.config, qa.files, qa.text, qa.questions, qa.train_cmd, qa.evaluate_cmd, qa.predict_cmd\n"
        "qa.train_cmd.config_from_args(['--max-steps', '1'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_file_names_and_config_keys_are_spelled_in_one_module():
    spelled = {}
    for path in PACKAGE.rglob("*.py"):
        for name in ("metrics.json", "predictions.json", "na_prob.json", "training_args.json", "qa_null_threshold"):
            if f'"{name}"' in path.read_text():
                spelled.setdefault(name, []).append(path.name)
    assert spelled == {name: ["files.py"] for name in spelled} and len(spelled) == 5, spelled
