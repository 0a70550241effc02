"""The README's example runs as written; the prompts page shows every template verbatim."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_example_runs_and_prints_what_it_claims(capsys):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"## Twenty lines\n\n```python\n(.*?)```", text, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    claimed = re.findall(r"# -> (.*)", code)
    assert printed == claimed


def test_prompts_page_shows_every_template_verbatim():
    page = (ROOT / "docs" / "prompts.md").read_text()
    templates = sorted(
        p for p in resources.files("textgraph.prompts").iterdir() if p.name.endswith(".txt")
    )
    assert templates
    for template in templates:
        assert template.read_text().rstrip("\n") in page, (
            f"{template.name} changed: run python scripts/gen_prompts_doc.py"
        )


def run_page(name: str, capsys) -> None:
    """Run a page's python blocks in order, in one namespace; check what `# ->` claims."""
    text = (ROOT / "docs" / name).read_text()
    namespace: dict[str, object] = {}
    for code in re.findall(r"```python\n(.*?)```", text, re.S):
        exec(compile(code, name, "exec"), namespace)
        printed = capsys.readouterr().out.splitlines()
        assert printed == re.findall(r"# -> (.*)", code), name


def test_evaluation_page_runs_as_written(capsys):
    run_page("evaluation.md", capsys)


def test_optimizers_page_runs_as_written(capsys):
    run_page("optimizers.md", capsys)


def test_demos_page_runs_as_written(capsys):
    run_page("demos.md", capsys)


def test_mipro_page_runs_as_written(capsys):
    run_page("mipro.md", capsys)


def test_instruction_search_page_runs_as_written(capsys):
    run_page("instruction-search.md", capsys)


def test_compression_page_runs_as_written(capsys):
    run_page("compression.md", capsys)


def test_sequential_validation_page_runs_as_written(capsys):
    run_page("sequential-validation.md", capsys)


def test_structured_outputs_page_runs_as_written(capsys):
    run_page("structured-outputs.md", capsys)


def test_meta_prompting_page_runs_as_written(capsys):
    run_page("meta-prompting.md", capsys)


def test_coming_from_textgrad_page_runs_as_written(capsys):
    from textgraph.engines import context

    try:
        run_page("coming-from-textgrad.md", capsys)
    finally:
        context.reset_configuration()


def test_tracking_page_runs_as_written(capsys, monkeypatch, tmp_path):
    import pytest

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no network from tests
    monkeypatch.chdir(tmp_path)  # nothing MLflow writes may land in the checkout
    pytest.importorskip("mlflow", reason='MLflow is not installed: pip install "textgraph[mlflow]"')
    run_page("tracking.md", capsys)


def test_fused_backward_page_runs_as_written(capsys):
    run_page("fused-backward.md", capsys)


def test_ci_page_runs_as_written(capsys):
    run_page("ci.md", capsys)


def test_coming_from_dspy_page_runs_as_written(capsys):
    run_page("coming-from-dspy.md", capsys)


def test_images_page_runs_as_written(capsys):
    run_page("images.md", capsys)
