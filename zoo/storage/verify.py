"""``symzoo verify``: every check a reader relies on, each failure named by file and cause."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zoo.layout import ParamLayout
from zoo.storage.files import sha256_of
from zoo.storage.format import DATA_DIR, STATUSES, split_of
from zoo.storage.manifest import Manifest, ZooFormatError
from zoo.storage.reader import Zoo

__all__ = ["VerifyReport", "verify_zoo"]


@dataclass
class VerifyReport:
    models: int = 0
    shards: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_zoo(zoo_dir: str | Path) -> VerifyReport:
    """Check manifest, masks file, architecture, and every shard (checksum, schema, rows, ids)."""
    zoo_dir = Path(zoo_dir)
    report = VerifyReport()
    try:
        zoo = Zoo(zoo_dir)
        manifest = zoo.manifest
        layout = zoo.layout
    except ZooFormatError as err:
        report.problems.append(str(err))
        return report

    _check_fixed_and_arch(zoo, manifest, layout, report)
    expected = zoo.arrow_schema
    seen: dict[str, str] = {}
    for shard in manifest.shards:
        path = zoo_dir / shard.path
        report.shards += 1
        if not path.is_file():
            report.problems.append(f"{path}: listed in zoo.json but missing")
            continue
        if path.stat().st_size != shard.bytes or sha256_of(path) != shard.sha256:
            report.problems.append(f"{path}: checksum mismatch (size {path.stat().st_size}, zoo.json says {shard.bytes}); the file is damaged")
            continue
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            report.problems.append(f"{path}: not a readable Parquet file ({err})")
            continue
        if table.schema != expected:
            report.problems.append(f"{path}: schema differs from the zoo's (weights length {_weights_length(table.schema)}, expected {manifest.num_params})")
            continue
        if table.num_rows != shard.rows:
            report.problems.append(f"{path}: {table.num_rows} rows, zoo.json says {shard.rows}")
        report.models += table.num_rows
        _check_rows(path, shard.split, table, seen, report)

    listed = {s.path for s in manifest.shards}
    for path in sorted((zoo_dir / DATA_DIR).glob("*.parquet")):
        if f"{DATA_DIR}/{path.name}" not in listed:
            report.problems.append(f"{path}: not listed in zoo.json (an interrupted write? rerun the generator to adopt it)")
    return report


def _check_fixed_and_arch(zoo: Zoo, manifest: Manifest, layout: ParamLayout, report: VerifyReport) -> None:
    fixed_path = zoo.path / manifest.fixed_file
    if sha256_of(fixed_path) != manifest.fixed_sha256:
        report.problems.append(f"{fixed_path}: checksum mismatch; the masks file is damaged")
    if int((~layout.trainable_mask).sum()) != sum(r["fixed"] for r in manifest.layout):
        report.problems.append(f"{fixed_path}: fixed-entry count disagrees with the layout table in zoo.json")
    try:
        built = ParamLayout.from_module(zoo.spec.build())
    except ZooFormatError as err:
        report.problems.append(str(err))
        return
    if not built.same_tensors(layout) or built.size != manifest.num_params:
        report.problems.append(f"{zoo.path}/zoo.json: layout table does not match the architecture it names")


def _check_rows(path: Path, split: str, table: pa.Table, seen: dict[str, str], report: VerifyReport) -> None:
    ids = table.column("model_id").to_pylist()
    for model_id in ids:
        if model_id in seen:
            report.problems.append(f"{path}: duplicate model_id {model_id} (also in {seen[model_id]})")
        seen[model_id] = str(path)
        if split_of(model_id) != split:
            report.problems.append(f"{path}: model {model_id} belongs to split '{split_of(model_id)}', not '{split}'")
    bad_status = pc.invert(pc.is_in(table.column("status"), pa.array(STATUSES)))
    if pc.any(bad_status).as_py():
        report.problems.append(f"{path}: status values other than {STATUSES}")


def _weights_length(schema: pa.Schema) -> int | str:
    if "weights" not in schema.names:
        return "missing"
    kind = schema.field("weights").type
    return kind.list_size if pa.types.is_fixed_size_list(kind) else str(kind)
