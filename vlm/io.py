"""Small file helpers every stage uses: atomic writes (temp file + rename) and stable JSON."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def json_safe(x: Any) -> Any:
    """NaN / inf (an empty group, an undefined ratio) are not valid JSON: they become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def dumps_json(obj: Any) -> str:
    # Stable text: same object -> same bytes (no sorting, so the input's key order survives).
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resume_jsonl(path: str | Path, key: str = "id") -> dict[str, dict]:
    """Records already in an append-only JSONL, by ``key``. A process killed mid-write can leave a partial
    last line: it is cut off here (the file is truncated to its last complete line) so appending resumes cleanly."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with path.open("r+b") as f:
            f.truncate(len(complete))
    records = {}
    for line in complete.decode("utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            records[str(rec[key])] = rec
    return records


def append_jsonl(path: str | Path, records: list[dict]) -> None:
    """Append whole lines and fsync: after a crash every line on disk is complete except possibly the last."""
    if not records:
        return
    with Path(path).open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())
