"""Rewrite the options tables of docs/cli/<command>.md from the commands' help (imaging.cli.options_table); the
text above "## Options" is kept. Run after changing an option: `python scripts/cli_docs.py`."""
from pathlib import Path

from imaging.cli import main, options_table

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli"

for name in main.commands:
    page = DOCS / f"{name}.md"
    text = page.read_text() if page.exists() else f"# imaging {name}\n\n"
    head = text.split("## Options")[0].rstrip() + "\n\n"
    page.write_text(head + "## Options\n\n" + options_table(name))
    print(f"-> {page}")
