"""``symzoo repair``: bring a damaged zoo back to a state that ``generate`` (or an import) can finish.

Nothing is deleted. Damaged, missing or foreign shard files are dropped from ``zoo.json`` and
moved to ``ZOO/quarantine/<time>/``; the next run of the same ``generate`` or ``import`` command
then makes exactly the models they held. A lost ``zoo.json`` is rebuilt from the header that
every shard carries in its Parquet footer, without retraining anything.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from zoo.storage.card import write_card
from zoo.storage.files import DirectoryLock, refuse_symlink, sha256_of
from zoo.storage.format import DATA_DIR, MANIFEST, QUARANTINE_DIR, SHARD_HEADER_KEY, row_schema
from zoo.storage.integrity import fixed_digest, footer_header, shard_header, unlisted_shard_problem
from zoo.storage.manifest import SHARD_PATH, Manifest, ShardInfo, ZooFormatError, software_versions

__all__ = ["RepairReport", "repair_zoo"]


@dataclass
class RepairReport:
    zoo: Path
    rebuilt_manifest: bool = False
    quarantined: list[tuple[str, str, bool]] = field(default_factory=list)  # (file, why, moved: it existed)
    dropped_models: int = 0
    quarantine: Path | None = None

    @property
    def changed(self) -> bool:
        return self.rebuilt_manifest or bool(self.quarantined)


def repair_zoo(zoo_dir: str | Path) -> RepairReport:
    """Rebuild a lost ``zoo.json``, then quarantine every listed shard that fails its checksum or
    is missing, and every unlisted file that cannot be this zoo's. Files that could be adopted are
    left for the next ``generate``/``import``, which checks their rows."""
    zoo = Path(zoo_dir)
    if not zoo.is_dir():
        raise ZooFormatError(f"{zoo}: no such zoo directory")
    report = RepairReport(zoo)
    with DirectoryLock(zoo):
        if (zoo / MANIFEST).exists():
            manifest = Manifest.load(zoo)
        else:
            manifest = _rebuild_manifest(zoo, report)
            report.rebuilt_manifest = True
        fixed = _stored_fixed(zoo, manifest)
        schema = row_schema(manifest.num_params, manifest.schema.hyperparameters, list(manifest.schema.curves),
                            list(manifest.schema.checkpoint_epochs))
        schema = schema.with_metadata({SHARD_HEADER_KEY: shard_header(manifest, fixed)})
        header = schema.metadata[SHARD_HEADER_KEY]
        footers = {_footer(zoo / s.path) for s in manifest.shards} - {None}
        if footers and header not in footers:
            raise ZooFormatError(f"{zoo}/zoo.json disagrees with the zoo header of every shard (was it edited?); "
                                 f"move zoo.json away and run `symzoo repair {zoo}` again to rebuild it from the shards")
        kept, taken = [], set()
        for shard in manifest.shards:
            problem = _listed_problem(zoo, shard, schema, taken)
            if problem:
                report.dropped_models += shard.rows
                _quarantine(zoo, shard.path, problem, report)
            else:
                kept.append(shard)
        listed = {s.path for s in manifest.shards}
        for path in sorted((zoo / DATA_DIR).glob("*.parquet")):
            rel = f"{DATA_DIR}/{path.name}"
            if rel not in listed:
                problem = unlisted_shard_problem(path, schema, set(taken))
                if problem:
                    _quarantine(zoo, rel, problem, report)
        if report.changed:
            manifest.shards = kept
            manifest.save(zoo)
            write_card(zoo, manifest, schema)
    return report


def _listed_problem(zoo: Path, shard: ShardInfo, schema: pa.Schema, taken: set[int]) -> str | None:
    """Why a listed shard cannot be served; its indices join ``taken`` when it can."""
    path = zoo / shard.path
    if path.is_symlink() or not path.is_file():
        return "listed in zoo.json but missing (or not a plain file)"
    if path.stat().st_size != shard.bytes or sha256_of(path) != shard.sha256:
        return "checksum mismatch"
    try:
        found = pq.read_schema(path)
        if found != schema:
            return "columns differ from the zoo's"
        if (found.metadata or {}).get(SHARD_HEADER_KEY) not in (None, schema.metadata[SHARD_HEADER_KEY]):
            return "written for another zoo (its header differs from zoo.json's)"
        indices = pq.read_table(path, columns=["index"]).column("index").to_pylist()
    except (pa.ArrowException, OSError) as err:
        return f"not a readable Parquet file ({err})"
    if taken.intersection(indices):
        return "holds models that an earlier shard holds too"
    taken.update(indices)
    return None


def _footer(path: Path) -> bytes | None:
    try:
        return footer_header(path)
    except ZooFormatError:
        return None


def _quarantine(zoo: Path, rel: str, why: str, report: RepairReport) -> None:
    if report.quarantine is None:
        refuse_symlink(zoo / QUARANTINE_DIR)
        report.quarantine = zoo / QUARANTINE_DIR / time.strftime("%Y%m%d-%H%M%S")
    target = report.quarantine / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    moved = (zoo / rel).exists() or (zoo / rel).is_symlink()
    if moved:
        shutil.move(zoo / rel, target)
    report.quarantined.append((rel, why, moved))


def _stored_fixed(zoo: Path, manifest: Manifest) -> tuple[torch.Tensor, torch.Tensor]:
    path = zoo / manifest.fixed_file
    if not path.is_file() or sha256_of(path) != manifest.fixed_sha256:
        raise ZooFormatError(f"{path}: missing or damaged (checksum mismatch); it holds the masks every row needs: "
                             "restore it from a copy of the zoo")
    with np.load(path) as data:
        return torch.from_numpy(data["trainable_mask"].astype(bool)), torch.from_numpy(data["fixed_values"].astype(np.float32))


def _rebuild_manifest(zoo: Path, report: RepairReport) -> Manifest:
    """``zoo.json`` from the header in the shards' footers; the shards that agree are listed."""
    headers: dict[str, bytes | None] = {}
    for path in sorted((zoo / DATA_DIR).glob("*.parquet")):
        try:
            headers[f"{DATA_DIR}/{path.name}"] = (pq.read_schema(path).metadata or {}).get(SHARD_HEADER_KEY)
        except (pa.ArrowException, OSError):
            headers[f"{DATA_DIR}/{path.name}"] = None
    votes = Counter(h for h in headers.values() if h is not None)
    if not votes:
        raise ZooFormatError(f"{zoo}: zoo.json is missing and no shard in {DATA_DIR}/ carries a zoo header "
                             "(shards written before symzoo 0.2 do not); restore zoo.json from a copy of the zoo")
    header_json = votes.most_common(1)[0][0]
    header = json.loads(header_json)
    digest = header.pop("fixed_digest")
    fixed_path = zoo / str(header.get("fixed_file"))
    manifest = Manifest.from_data({**header, "fixed_sha256": "0" * 64, "shards": [], "software": software_versions()},
                                  f"{zoo}/{DATA_DIR} shard header")
    if not fixed_path.is_file():
        raise ZooFormatError(f"{fixed_path}: missing; zoo.json cannot be rebuilt without the zoo's masks file")
    manifest.fixed_sha256 = sha256_of(fixed_path)
    if fixed_digest(_stored_fixed(zoo, manifest)) != digest:
        raise ZooFormatError(f"{fixed_path}: holds other masks than the shards were written with; "
                             "restore it from a copy of the zoo")
    schema = row_schema(manifest.num_params, manifest.schema.hyperparameters, list(manifest.schema.curves),
                        list(manifest.schema.checkpoint_epochs)).with_metadata({SHARD_HEADER_KEY: header_json})
    taken: set[int] = set()
    for rel, found in headers.items():
        path = zoo / rel
        problem = "written for another zoo, or unreadable" if found != header_json else (
            unlisted_shard_problem(path, schema, taken))
        if problem:
            _quarantine(zoo, rel, problem, report)
            continue
        indices = pq.read_table(path, columns=["index"]).column("index").to_pylist()
        taken.update(indices)
        split = SHARD_PATH.fullmatch(rel)["split"]
        manifest.shards.append(ShardInfo(rel, split, len(indices), sha256_of(path), path.stat().st_size))
    return manifest
