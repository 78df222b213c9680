#!/usr/bin/env python
"""Download, verify and extract the BAIR robot pushing data set (~30 GB).

    python tools/download_bair.py --root datasets/bair            # download + verify + extract
    python tools/download_bair.py --root datasets/bair --no-extract
    python tools/download_bair.py --root datasets/bair --sha256 <hex>

Steps (each safe to re-run; nothing the user has is ever deleted or overwritten):

1. Download ``bair_robot_pushing_dataset_v0.tar`` into ``<root>/…tar.part``, resuming
   an interrupted download with an HTTP Range request; when the size matches the
   server's Content-Length the file is renamed atomically to ``<root>/…tar``. An
   existing complete ``…tar`` is used as is.
2. Verify: the size (during download), the optional ``--sha256``, and that the tar
   lists ``softmotion30_44k/train/*.tfrecords`` and ``softmotion30_44k/test/*.tfrecords``.
3. Extract only ``softmotion30_44k/`` into ``<root>/softmotion30_44k/`` (each file is
   written to ``….part`` and renamed, so an interrupted extraction resumes; a file
   already there with the right size is kept, one with a different size stops the run).

The tar is kept afterwards; delete it yourself to free the space. Uses only the
standard library. See ``datasets/bair/README.md``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

URL = "http://rail.eecs.berkeley.edu/datasets/bair_robot_pushing_dataset_v0.tar"
TAR_NAME = "bair_robot_pushing_dataset_v0.tar"
FOLDER = "softmotion30_44k"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """The download, verification or extraction failed; the message says what to do."""


# ---------------------------------------------------------------------- download
def _parse_total(response) -> int | None:
    """Total file size from a 206 Content-Range (``bytes a-b/total``) or a 200 Content-Length."""
    content_range = response.headers.get("Content-Range")
    if content_range:
        match = re.match(r"bytes\s+\d+-\d+/(\d+)", content_range)
        return int(match.group(1)) if match else None
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def download(url: str, dest: Path, *, urlopen: Callable = urllib.request.urlopen,
             progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming a partial ``.part``.

    Returns ``dest``. Raises :class:`DownloadError` when the server ignores the Range
    request of a resumed download (the ``.part`` is then left untouched), or when the
    finished size differs from the server's Content-Length. ``urlopen`` is injectable
    for tests.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        raise DownloadError(f"{dest} already exists; not downloading over it")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urlopen(request)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to fetch: .part is complete (size checked below)
            total = None
            match = re.match(r"bytes\s+\*/(\d+)", err.headers.get("Content-Range", "") or "")
            if match:
                total = int(match.group(1))
            return _finish(part, dest, total)
        raise DownloadError(f"downloading {url} failed: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise DownloadError(f"cannot reach {url}: {err.reason}. Check the network and re-run; "
                            f"the download resumes from {part}") from None
    with response:
        status = getattr(response, "status", None) or response.getcode()
        if have and status != 206:
            raise DownloadError(
                f"the server ignored the resume request (HTTP {status}) for {url}; {part} "
                f"({have} bytes) was left untouched. Move or delete it yourself and re-run to start over")
        total = _parse_total(response)
        done = have
        with open(part, "ab" if have else "wb") as f:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    return _finish(part, dest, total)


def _finish(part: Path, dest: Path, total: int | None) -> Path:
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{part} has {size} bytes but the server announced {total}; "
                            f"re-run the same command to resume the download")
    if dest.exists():
        raise DownloadError(f"{dest} appeared while downloading; not overwriting it (the download is in {part})")
    os.replace(part, dest)  # atomic on one file system
    return dest


def _print_progress(done: int, total: int | None) -> None:
    if total:
        print(f"\r  {done / 2**30:6.2f} / {total / 2**30:.2f} GiB ({100 * done / total:5.1f}%)",
              end="", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ verify
def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class TarContents:
    """The data members of a BAIR tar: name inside the tar -> relative path under the folder."""

    members: dict[str, PurePosixPath] = field(default_factory=dict)
    train: int = 0
    test: int = 0


def _relative(name: str) -> PurePosixPath | None:
    """The path under ``softmotion30_44k/`` of a tar member, or None if it is outside it."""
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if FOLDER not in parts:
        return None
    rel = parts[parts.index(FOLDER) + 1:]
    if not rel or any(p == ".." for p in rel) or PurePosixPath(name).is_absolute():
        return None
    return PurePosixPath(*rel)


def verify_tar(tar_path: Path, sha256: str | None = None) -> TarContents:
    """Check a BAIR tar: optional SHA-256, and that it lists train and test TFRecords.

    Raises :class:`DownloadError` saying what is missing.
    """
    tar_path = Path(tar_path)
    if sha256:
        got = sha256_of(tar_path)
        if got.lower() != sha256.lower():
            raise DownloadError(f"{tar_path} has SHA-256 {got}, expected {sha256}; the file was kept. "
                                f"Move it away and re-run to download it again")
    contents = TarContents()
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for member in tar:
                rel = _relative(member.name)
                if rel is None or not member.isfile():
                    continue
                contents.members[member.name] = rel
                if len(rel.parts) == 2 and rel.suffix == ".tfrecords":
                    contents.train += rel.parts[0] == "train"
                    contents.test += rel.parts[0] == "test"
    except tarfile.TarError as err:
        raise DownloadError(f"{tar_path} is not a readable tar ({err}); it may be incomplete or corrupt") from None
    missing = [f"{FOLDER}/{split}/*.tfrecords" for split, n in (("train", contents.train), ("test", contents.test))
               if n == 0]
    if missing:
        raise DownloadError(f"{tar_path} does not contain {' or '.join(missing)}; it is not the BAIR "
                            f"robot pushing tar ({TAR_NAME})")
    return contents


# ----------------------------------------------------------------------- extract
def extract_tar(tar_path: Path, root: Path, contents: TarContents | None = None) -> tuple[int, int]:
    """Extract the ``softmotion30_44k/`` files of a verified tar into ``root/softmotion30_44k``.

    Returns (files written, files already present). Never overwrites: a file already
    there with the member's size is kept; one with another size raises
    :class:`DownloadError`. Each file is written to ``<name>.part`` and then renamed.
    """
    contents = contents or verify_tar(tar_path)
    out_dir = Path(root) / FOLDER
    written = kept = 0
    with tarfile.open(tar_path, "r:") as tar:
        for member in tar:
            rel = contents.members.get(member.name)
            if rel is None:
                continue
            dest = out_dir.joinpath(*rel.parts)
            if dest.exists():
                if dest.stat().st_size == member.size:
                    kept += 1
                    continue
                raise DownloadError(f"{dest} exists with {dest.stat().st_size} bytes but the tar has "
                                    f"{member.size}; not overwriting it. Move it away and re-run")
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(dest.name + ".part")
            source = tar.extractfile(member)
            with source, open(part, "wb") as f:
                shutil.copyfileobj(source, f, CHUNK)
            os.replace(part, dest)
            written += 1
    return written, kept


def is_extracted(root: Path) -> bool:
    """True when ``root/softmotion30_44k/{train,test}`` both hold ``*.tfrecords``."""
    return all(any((Path(root) / FOLDER / split).glob("*.tfrecords")) for split in ("train", "test"))


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="datasets/bair", help="data root (default: datasets/bair)")
    parser.add_argument("--no-extract", action="store_true", help="download and verify only")
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the tar (optional)")
    parser.add_argument("--url", default=URL, help="where to download from (default: the official URL)")
    args = parser.parse_args(argv)

    root = Path(args.root)
    tar_path = root / TAR_NAME
    if is_extracted(root) and not tar_path.exists():
        print(f"BAIR is already extracted in {root / FOLDER} (and no tar is left to check); nothing to do.")
        return 0
    root.mkdir(parents=True, exist_ok=True)
    try:
        if tar_path.exists():
            print(f"using the existing {tar_path}")
        else:
            print(f"downloading {args.url}\n  -> {tar_path} (~30 GB; re-run to resume if interrupted)")
            download(args.url, tar_path, progress=_print_progress)
            print(file=sys.stderr)
        print("verifying the tar" + (" (SHA-256 of 30 GB takes a few minutes)" if args.sha256 else ""))
        contents = verify_tar(tar_path, args.sha256)
        print(f"  {contents.train} train and {contents.test} test TFRecord files listed")
        if args.no_extract:
            return 0
        print(f"extracting {FOLDER}/ into {root}")
        written, kept = extract_tar(tar_path, root, contents)
        print(f"  {written} files written, {kept} already present. You may delete {tar_path} to free space.")
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
