"""The package version (one home; read by saved models and reports)."""

__version__ = "0.1.0"


def source_commit() -> str | None:
    """The git commit of the source this package runs from (an editable install in a clone), with
    ``+dirty`` when files differ from it; None for an installed wheel or without git. Generated
    reproduction scripts record it."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None
