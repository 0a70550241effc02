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
