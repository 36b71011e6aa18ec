"""The check every CLI test of a user's mistake makes (STYLE.md: one line, exit code 2)."""
from __future__ import annotations


def user_error(result, needle: str = "") -> str:
    """Assert that a CliRunner `result` is one user error: exit code 2, nothing on stdout, exactly
    one line on stderr, `error: ...`, containing `needle`. Returns that line."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    return lines[0]
