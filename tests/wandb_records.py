"""Read an offline W&B run file (``run-*.wandb``) back into its protobuf records.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks
of chunks, each with a 7-byte header (CRC-32 of type and data, little-endian length, type: 1 full,
2 first, 3 middle, 4 last). Used by the tests only; W&B itself syncs these files with `wandb sync`.
W&B's service process, not the caller of ``finish()``, writes the file, so ``logged`` waits for the
run's closing ``exit`` record.
"""

import json
import struct
import time
import zlib
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768


def read_records(path: Path) -> list:
    """Every record up to the first chunk not (yet) fully on disk, which fails its CRC."""
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:
            pos += left_in_block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            break
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def finished_records(path: Path, timeout: float = 60.0) -> list:
    """The run's records once its ``exit`` record is on disk."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if records and records[-1].WhichOneof("record_type") == "exit":
            return records
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s"
        time.sleep(0.2)


def logged(path: Path) -> tuple[dict, dict, dict]:
    """(config, summary, last value of every history key) of an offline run file."""
    config, summary, history = {}, {}, {}
    for record in finished_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "summary":
            summary.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "history":
            history.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return config, summary, history
