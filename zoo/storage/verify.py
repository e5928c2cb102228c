"""``symzoo verify``: every check a reader relies on, each failure named by file and cause."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zoo.layout import ParamLayout
import torch

from zoo.storage.files import sha256_of
from zoo.storage.format import DATA_DIR, SHARD_HEADER_KEY, STATUSES, model_id_of, split_of
from zoo.storage.integrity import shard_header, unlisted_shard_problem
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
    """Check manifest, masks file, architecture, and every shard (checksum, schema, rows, ids);
    for an HDF5 export, every dataset's checksum."""
    zoo_dir = Path(zoo_dir)
    report = VerifyReport()
    if zoo_dir.suffix in (".h5", ".hdf5"):
        from zoo.storage.hdf5 import verify_hdf5

        return verify_hdf5(zoo_dir)
    try:
        zoo = Zoo(zoo_dir)
        manifest = zoo.manifest
        layout = zoo.layout
    except ZooFormatError as err:
        report.problems.append(str(err))
        return report

    _check_fixed_and_arch(zoo, manifest, layout, report)
    expected = zoo.arrow_schema
    header = shard_header(manifest, zoo.fixed).encode()
    seen: dict[str, str] = {}
    for shard in manifest.shards:
        path = zoo_dir / shard.path
        report.shards += 1
        if path.is_symlink() or not path.is_file():
            report.problems.append(f"{path}: listed in zoo.json but missing (or not a plain file); "
                                   f"`symzoo repair {zoo_dir}` drops it, then rerun to make its models again")
            continue
        if path.stat().st_size != shard.bytes or sha256_of(path) != shard.sha256:
            report.problems.append(f"{path}: checksum mismatch (size {path.stat().st_size}, zoo.json says {shard.bytes}); "
                                   f"the file is damaged: `symzoo repair {zoo_dir}` moves it to quarantine, "
                                   "then rerun to make its models again")
            continue
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            report.problems.append(f"{path}: not a readable Parquet file ({err})")
            continue
        if table.schema != expected:
            report.problems.append(f"{path}: schema differs from the zoo's (weights length {_weights_length(table.schema)}, expected {manifest.num_params})")
            continue
        if (table.schema.metadata or {}).get(SHARD_HEADER_KEY) not in (None, header):
            report.problems.append(f"{path}: written with another zoo header than zoo.json's (was zoo.json edited? "
                                   f"move it away and run `symzoo repair {zoo_dir}` to rebuild it from the shards)")
        if table.num_rows != shard.rows:
            report.problems.append(f"{path}: {table.num_rows} rows, zoo.json says {shard.rows}")
        report.models += table.num_rows
        _check_rows(path, shard.split, table, seen, report)

    listed = {s.path for s in manifest.shards}
    header_schema = zoo.arrow_schema.with_metadata({SHARD_HEADER_KEY: header})
    taken = {int(model_id[1:]) for model_id in seen}
    for path in sorted((zoo_dir / DATA_DIR).glob("*.parquet")):
        if f"{DATA_DIR}/{path.name}" not in listed:
            problem = unlisted_shard_problem(path, header_schema, taken)
            report.problems.append(
                f"{path}: not listed in zoo.json; " + (
                    f"it cannot be this zoo's ({problem}): `symzoo repair {zoo_dir}` moves it to quarantine" if problem
                    else "a run was interrupted after writing it: rerun the same generate or import command, which "
                         "checks its rows and lists it"))
    return report


def _check_fixed_and_arch(zoo: Zoo, manifest: Manifest, layout: ParamLayout, report: VerifyReport) -> None:
    """The masks file, the layout table and the architecture must describe one network: the
    tensors the architecture builds, at the offsets listed, with the fixed entries stored."""
    fixed_path = zoo.path / manifest.fixed_file
    try:
        mask, values = zoo.fixed
    except ZooFormatError as err:
        report.problems.append(str(err))
        return
    for record in manifest.layout:
        stored = int((~mask[record["offset"] : record["offset"] + record["numel"]]).sum())
        if stored != record["fixed"]:
            report.problems.append(f"{fixed_path}: tensor {record['name']} has {stored} fixed entries; "
                                   f"the layout table in zoo.json says {record['fixed']}")
    try:
        model = zoo.spec.build()
    except ZooFormatError as err:
        report.problems.append(str(err))
        return
    built = ParamLayout.from_module(model)
    tensors = lambda records: [(r["name"], list(r["shape"]), r["offset"], r["numel"]) for r in records]  # noqa: E731
    variant = manifest.arch.get("variant")
    if tensors(built.to_records()) != tensors(manifest.layout):
        report.problems.append(f"{zoo.path}/zoo.json: layout table (names, shapes, offsets) does not "
                               f"match the architecture it names ({manifest.arch.get('family')}, "
                               f"{manifest.arch.get('variant')})")
    elif (variant == "standard") != bool(mask.all()):
        report.problems.append(f"{fixed_path}: the masks file {'fixes' if variant == 'standard' else 'fixes no'} "
                               f"entries, but zoo.json names a {variant} network")
    elif manifest.masks == "spec" and not (
            torch.equal(built.trainable_mask, mask)
            and torch.allclose(torch.where(mask, 0.0, built.flatten(model)), values, rtol=1e-5, atol=1e-6)):
        report.problems.append(f"{fixed_path}: masks or fixed values differ from those of the architecture in "
                               "zoo.json (its variant, W-Asym settings or asym_seed were changed?)")


def _check_rows(path: Path, split: str, table: pa.Table, seen: dict[str, str], report: VerifyReport) -> None:
    ids = table.column("model_id").to_pylist()
    if ids != [model_id_of(i) for i in table.column("index").to_pylist()]:
        report.problems.append(f"{path}: model ids do not match the indices stored with them")
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
