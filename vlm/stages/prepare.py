"""Make a downloaded dataset usable: ``python -m vlm prepare llava-cot --root DIR [--check_only]``.

For the benchmarks that ship their images as ``image.zip.part-aa``, ``-ab``, … (``Benchmark.image_archive``;
LLaVA-CoT-100k, next to its ``train.jsonl``; any ``image.zip.part-<suffix>``, sorted naturally: ``part-2``
before ``part-10``). This stage

1. joins the parts into ``DIR/image.zip`` — resumable: a partial join (``image.zip.joining``) is continued
   from its size when its bytes match the parts' prefix (checked at every part boundary it covers and over
   its last MiB), else started over; an existing image.zip is joined again when the parts changed since
   (a re-downloaded part of the same size); the sha256 of the joined file is recorded in ``image.zip.sha256``.
   A checksum the dataset ships (``image.zip.sha256`` / ``image.zip.md5``) is verified instead of overwritten;
2. extracts it into DIR — entries already there with the right size are skipped, entries that would land
   outside DIR (zip-slip) stop the stage before anything is written, files appear atomically;
3. validates the download with the benchmark's ``check_download`` (LLaVA-CoT: every record of
   ``DIR/train.jsonl`` against the image root — DIR, or ``DIR/images`` / ``DIR/image`` when the records'
   images are found there — printing good / bad counts by reason). Bad records are reported, not fatal.

Exit 0 when the archive and train.jsonl are fine; 2 with one line ``FILE: location: what is wrong`` when
there are neither parts nor an archive nor an extracted image folder, a part is missing, a checksum does
not match, or the zip is corrupt. ``--check_only`` skips steps 1–2.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vlm.benchmarks import BENCHMARKS, Benchmark, get
from vlm.data.errors import DataError

ARCHIVE = "image.zip"
JOINING = "image.zip.joining"  # a join in progress; renamed to image.zip when complete
STAMP = ".image.zip.verified.json"  # size + mtime + sha256 of the last verified archive: skip re-hashing
PART_RE = re.compile(r"^image\.zip\.part-([A-Za-z0-9]+)$")
CHUNK = 8 << 20
WINDOW = 1 << 20  # bytes compared at each part boundary / at the end of a partial join
SHIPPED_CHECKSUMS = (("sha256", "image.zip.sha256"), ("md5", "image.zip.md5"))
DATASETS = tuple(name for name, b in BENCHMARKS.items() if b.image_archive)

Log = Callable[[str], None]


@dataclass
class Config:
    """Prepare a downloaded dataset (join image.zip.part-*, extract, validate; llava-cot: train.jsonl)."""

    dataset: str = field(metadata={"help": "dataset layout", "choices": list(DATASETS), "positional": True})
    root: str = field(metadata={"help": "dataset folder (train.jsonl + image.zip.part-*); extracted here"})
    check_only: bool = field(default=False, metadata={"help": "skip joining and extracting: only validate train.jsonl and images"})


# ---------------------------------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------------------------------


def natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def find_parts(root: Path) -> list[Path]:
    parts = [p for p in root.iterdir() if p.is_file() and PART_RE.match(p.name)]
    return sorted(parts, key=lambda p: natural_key(p.name))


def _suffix_index(suffix: str) -> int | None:
    if suffix.isdigit():
        return int(suffix)
    if suffix.isalpha() and suffix.islower():
        n = 0
        for ch in suffix:
            n = n * 26 + ord(ch) - ord("a")
        return n
    return None


def _suffix_name(index: int, like: str) -> str:
    if like.isdigit():
        return str(index).zfill(len(like))
    letters = []
    for _ in like:
        index, r = divmod(index, 26)
        letters.append(chr(ord("a") + r))
    return "".join(reversed(letters))


def missing_parts(parts: list[Path]) -> list[str]:
    """Names of parts absent from a split-style sequence (aa, ab, … or 0/1, 2, …); [] when it cannot tell."""
    suffixes = [PART_RE.match(p.name).group(1) for p in parts]
    kinds = {(s.isdigit(), len(s) if not s.isdigit() else 0) for s in suffixes}
    indices = [_suffix_index(s) for s in suffixes]
    if len(kinds) != 1 or None in indices:
        return []
    first = 0 if not suffixes[0].isdigit() or indices[0] == 0 else 1
    present = set(indices)
    return [f"image.zip.part-{_suffix_name(i, suffixes[0])}" for i in range(first, max(indices)) if i not in present]


def _prefix_matches(partial: Path, parts: list[Path], size: int) -> bool:
    """Compare the partial join with the parts at every part boundary it covers and over its last WINDOW."""
    windows, offset = [], 0
    for part in parts:
        if offset >= size:
            break
        windows.append((offset, min(WINDOW, size - offset)))
        offset += part.stat().st_size
    windows.append((max(0, size - WINDOW), min(WINDOW, size)))
    with partial.open("rb") as f:
        for start, length in windows:
            f.seek(start)
            if f.read(length) != _read_span(parts, start, length):
                return False
    return True


def _read_span(parts: list[Path], start: int, length: int) -> bytes:
    out, offset = bytearray(), 0
    for part in parts:
        size = part.stat().st_size
        if start < offset + size and len(out) < length:
            with part.open("rb") as f:
                f.seek(max(0, start + len(out) - offset))
                out += f.read(length - len(out))
        offset += size
    return bytes(out)


def parts_signature(parts: list[Path]) -> list[list]:
    """(name, size, mtime) of every part: a re-downloaded part makes image.zip stale even at the same size."""
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in parts]


def read_stamp(root: Path) -> dict:
    try:
        stamp = json.loads((root / STAMP).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def write_stamp(root: Path, **updates) -> None:
    """Merge ``updates`` into the stamp: parts joined, size/mtime/digests of image.zip, our recorded sha256."""
    from vlm.io import atomic_write_text

    atomic_write_text(root / STAMP, json.dumps({**read_stamp(root), **updates}))


def _hashers(names) -> dict[str, hashlib._Hash]:
    return {name: hashlib.new(name) for name in names}


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=None, leave=False)


def join_parts(root: Path, parts: list[Path], log: Log = print) -> dict[str, str]:
    """Join ``parts`` into ``root/image.zip`` (resuming a partial join); returns hex digests of the result."""
    target, tmp = root / ARCHIVE, root / JOINING
    total = sum(p.stat().st_size for p in parts)
    if target.exists() and not tmp.exists():
        size = target.stat().st_size
        joined_from = read_stamp(root).get("parts")
        if size == total and joined_from == parts_signature(parts):
            log(f"{target}: already joined from these parts ({total:,} bytes, {len(parts)} parts): not joined again")
            return {}
        if size == total and joined_from is None and _prefix_matches(target, parts, size):
            log(f"{target}: already there with the parts' size and bytes at every part boundary: not joined again")
            return {}
        if size == total:
            log(f"{target}: the parts changed since it was joined: joining again")
            target.unlink()
            size = -1
        if 0 <= size < total:
            log(f"{target}: {size:,} of {total:,} bytes: treating it as a partial join")
            os.replace(target, tmp)
        elif size > total:
            log(f"{target}: {size:,} bytes but the parts hold {total:,}: joining again")
            target.unlink()
    start = 0
    if tmp.exists():
        start = tmp.stat().st_size
        if start > total or not _prefix_matches(tmp, parts, start):
            log(f"{tmp}: does not match the parts' first {start:,} bytes: joining from the start")
            start = 0
        else:
            log(f"{tmp}: resuming the join at byte {start:,} of {total:,}")
    hashers = _hashers(["sha256"] + [algo for algo, name in SHIPPED_CHECKSUMS if algo != "sha256" and (root / name).is_file()])
    bar = _progress(total, "join")
    with open(tmp, "r+b" if start else "wb") as out:
        done = 0
        while done < start:  # hash the bytes already joined
            chunk = out.read(min(CHUNK, start - done))
            for h in hashers.values():
                h.update(chunk)
            done += len(chunk)
            bar.update(len(chunk))
        out.truncate(start)
        out.seek(start)
        offset = 0
        for part in parts:
            size = part.stat().st_size
            if offset + size > start:
                with part.open("rb") as src:
                    src.seek(max(0, start - offset))
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
                        for h in hashers.values():
                            h.update(chunk)
                        bar.update(len(chunk))
            offset += size
        out.flush()
        os.fsync(out.fileno())
    bar.close()
    os.replace(tmp, target)
    digests = {name: h.hexdigest() for name, h in hashers.items()}
    st = target.stat()
    write_stamp(root, parts=parts_signature(parts), size=st.st_size, mtime_ns=st.st_mtime_ns, digests=digests)
    log(f"{target}: joined {len(parts)} parts, {total:,} bytes")
    return digests


# ---------------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------------


def _read_checksum(path: Path) -> str | None:
    """The hex digest for image.zip in a ``sha256sum``-style file (or a file holding just the digest)."""
    lines = [ln.split() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    for tokens in lines:
        if len(tokens) == 1 or tokens[-1].lstrip("*") == ARCHIVE:
            return tokens[0].lower()
    return None


def _hash_file(path: Path, algos: list[str]) -> dict[str, str]:
    hashers = _hashers(algos)
    bar = _progress(path.stat().st_size, "checksum")
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
            bar.update(len(chunk))
    bar.close()
    return {name: h.hexdigest() for name, h in hashers.items()}


def verify_archive(root: Path, digests: dict[str, str] | None = None, log: Log = print) -> str:
    """Check image.zip against the checksums the dataset ships and record its sha256 in image.zip.sha256
    (unless the dataset ships that file); returns the sha256. Digests computed while joining, or on an earlier
    run for the same size and mtime (the stamp), are reused instead of hashing the archive again."""
    from vlm.io import atomic_write_text

    archive = root / ARCHIVE
    st = archive.stat()
    stamp = read_stamp(root)
    same_file = stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns
    known = dict(stamp.get("digests") or {}) if same_file else {}
    if known and not digests:
        log(f"{archive}: hashed before and unchanged (same size and mtime): not hashed again")
    digests = {**known, **(digests or {})}
    shipped: dict[str, tuple[Path, str]] = {}
    for algo, name in SHIPPED_CHECKSUMS:
        path = root / name
        if not path.is_file():
            continue
        value = _read_checksum(path)
        if algo == "sha256" and value is not None and value == stamp.get("recorded_sha256"):
            continue  # our own record from an earlier run, not the dataset's
        if value is None:
            raise DataError.single(path, "-", f"no {algo} digest for {ARCHIVE} in this file")
        shipped[algo] = (path, value)
    need = [a for a in dict.fromkeys(["sha256", *shipped]) if a not in digests]
    if need:
        digests.update(_hash_file(archive, need))
    write_stamp(root, size=st.st_size, mtime_ns=st.st_mtime_ns, digests=digests)
    for algo, (path, expected) in shipped.items():
        if digests[algo] != expected:
            raise DataError.single(archive, "-", f"{algo} {digests[algo]} does not match {path.name} ({expected}): "
                                                 "a part is corrupt or incomplete; re-download the parts")
        log(f"{archive}: {algo} matches {path.name}")
    sha = digests["sha256"]
    if "sha256" not in shipped:
        atomic_write_text(root / "image.zip.sha256", f"{sha}  {ARCHIVE}\n")
        write_stamp(root, recorded_sha256=sha)
    log(f"{archive}: sha256 {sha}" + ("" if "sha256" in shipped else " (recorded in image.zip.sha256)"))
    return sha


# ---------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------


def _safe_target(dest: Path, name: str) -> Path | None:
    """Where an entry lands inside dest, or None when it would escape (absolute path, '..', drive letter)."""
    norm = os.path.normpath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or norm == ".." or norm.startswith("../") or norm == ".":
        return None
    return dest / norm


def extract(archive: Path, dest: Path, log: Log = print) -> tuple[int, int]:
    """Extract into dest; returns (extracted, skipped). Corrupt archive -> DataError naming the entry."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError.single(archive, "-", f"not a valid zip archive ({e}): a part is corrupt or missing; "
                                             "re-download the parts") from None
    with zf:
        infos = zf.infolist()
        unsafe = [i.filename for i in infos if _safe_target(dest, i.filename) is None]
        if unsafe:
            raise DataError([(str(archive), f"entry '{n}'", "path escapes the target folder (zip-slip): nothing extracted")
                             for n in unsafe])
        todo, skipped = [], 0
        for info in infos:
            target = _safe_target(dest, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif target.is_file() and target.stat().st_size == info.file_size:
                skipped += 1
            else:
                todo.append((info, target))
        if skipped:
            log(f"{archive}: {skipped} entries already extracted with the right size: skipped")
        bar = _progress(sum(i.file_size for i, _ in todo), "extract")
        for info, target in todo:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.extracting")
            try:
                with zf.open(info) as src, tmp.open("wb") as out:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
                tmp.unlink(missing_ok=True)
                raise DataError.single(archive, f"entry '{info.filename}'", f"corrupt archive ({e}): "
                                                                            "re-download the parts") from None
            os.replace(tmp, target)
        bar.close()
    log(f"{archive}: extracted {len(todo)} files into {dest}")
    return len(todo), skipped


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------


def _image_folders(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]


def prepare(bench: Benchmark, root: Path, check_only: bool = False, log: Log = print) -> int:
    if not root.is_dir():
        raise DataError.single(root, "-", "dataset folder not found")
    if not check_only:
        parts = find_parts(root)
        archive = root / ARCHIVE
        if parts:
            gaps = missing_parts(parts)
            if gaps:
                raise DataError.single(root, "-", f"missing part(s) {', '.join(gaps)} (have {len(parts)} parts): "
                                                  "download them first")
            digests = join_parts(root, parts, log)
        elif archive.is_file() or (root / JOINING).is_file():
            if not archive.is_file():
                raise DataError.single(root / JOINING, "-", "a partial join but no image.zip.part-* to finish it from")
            log(f"{archive}: no parts here; using the archive as it is")
            digests = {}
        elif _image_folders(root):
            log(f"{root}: no image.zip.part-* and no image.zip: validating the extracted folders as they are")
            archive = None
        else:
            raise DataError.single(root, "-", "no image.zip.part-*, no image.zip and no extracted image folder: "
                                              "download train.jsonl and image.zip.part-* here first")
        if archive is not None:
            verify_archive(root, digests, log)
            extract(archive, root, log)
    elif not _image_folders(root):
        hint = "run without --check_only to join and extract them" if find_parts(root) else "download and extract the images first"
        raise DataError.single(root, "-", f"no extracted image folder ({hint})")
    bench.check_download(root, log)
    return 0


def main(cfg: Config) -> int:
    if cfg.dataset in DATASETS:
        return prepare(get(cfg.dataset), Path(cfg.root), cfg.check_only)
    raise DataError.single("prepare", "dataset", f"unknown dataset '{cfg.dataset}' (supported: {', '.join(DATASETS)})")
