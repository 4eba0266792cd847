"""The README's "At the instrument" example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text.split("## At the instrument", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section should hold exactly one python example"
    return blocks[0]


def test_at_the_instrument_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the example works in ./emlive-instrument
    exec(compile(readme_example(), str(README), "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("snem_map (256, 64, 64)")
    assert out[1] == "complete"
    assert out[2].startswith("[5, 16, 16]")
    assert (tmp_path / "emlive-instrument" / "catalog" / "catalog.db").exists()
