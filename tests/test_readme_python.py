"""The README's Python API block runs as written (a stranger's walk found it used undefined
``images`` and trained into the quickstart's own run directory, which the run refused)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"### Python API\n\n```python\n(.*?)\n```", re.DOTALL)


@pytest.mark.usefixtures("one_thread")
def test_the_readmes_python_api_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    match = _BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert match, "README.md has no ```python block under '### Python API'"
    code = match.group(1)
    # One epoch instead of fifteen and fewer images (the suite's time); everything else as written.
    assert 'overrides=["activation=gelu",' in code and ", 200, seed=0)" in code
    fast = '"train.epochs=1", "attack.eval.samples=64",'
    code = code.replace('overrides=["activation=gelu",', f'overrides=["activation=gelu", {fast}')
    code = code.replace(", 200, seed=0)", ", 24, seed=0)")
    (tmp_path / "recipes").mkdir()
    shutil.copy(ROOT / "recipes" / "quickstart.toml", tmp_path / "recipes")
    (tmp_path / "runs" / "quickstart" / "checkpoints").mkdir(parents=True)  # the quickstart ran first
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    result, labels = namespace["result"], namespace["labels"]
    assert namespace["summary"].run_dir == Path("runs/quickstart-gelu")
    assert namespace["logits"].shape == (24, 10)
    assert 0 <= result.robust_accuracy <= result.report.clean_accuracy
    assert result.x_adv.shape == namespace["images"].shape and len(labels) == 24
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1].startswith(f"{result.robust_accuracy} ")
