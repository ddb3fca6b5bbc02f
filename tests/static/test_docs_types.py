"""mypy --strict on every Python block of README.md and docs/ that the docs tests run:
what a reader copies into a strictly typed project must type-check there too (a block
once used ``async with ledger_from_url(...)``, which the library's types refused)."""

from __future__ import annotations

from pathlib import Path

from tests.docs.blocks import Block, blocks, pages

from ._mypy import ERROR, mypy_strict


def python_blocks() -> list[Block]:
    return [
        block
        for page in pages()
        for block in blocks(page)
        if block.language == "python" and block.skip is None
    ]


def test_every_python_block_of_the_docs_passes_mypy_strict(tmp_path: Path) -> None:
    found = python_blocks()
    checked = tmp_path / "blocks"
    checked.mkdir()
    where: dict[str, str] = {}
    for number, block in enumerate(found):
        # A module name of its own each (two pages may show one file).
        name = f"docs_block_{number}.py"
        (checked / name).write_text(block.code)
        where[name] = block.where
    # And one block that must fail, in the same run: the check can fail.
    (checked / "untyped.py").write_text("def count(record, transition):\n    return 1\n")
    stdout = mypy_strict(*sorted(checked.iterdir()), cache=tmp_path / "cache")
    failed = [
        (Path(match["path"]).name, line)
        for line in stdout.splitlines()
        if (match := ERROR.match(line)) is not None
    ]
    assert any(name == "untyped.py" for name, _ in failed), stdout
    errors = [f"{where[name]}: {line}" for name, line in failed if name in where]
    assert not errors, "\n".join(errors)
    assert len(found) >= 9  # README's and the pages' examples, none lost to a parse change
