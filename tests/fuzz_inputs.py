"""Seeded mutations of a small NIfTI and a PNG, read with :func:`medsam2.load_volume` under a cap.

Run as a script (``python tests/fuzz_inputs.py WORKDIR SEED COUNT CAP_MB``) so that the peak
memory is this process's own; prints one JSON line:
``{"cases", "refused", "loaded", "unexpected": [...], "oversized": [...], "baseline_mb", "peak_mb"}``.
"""

from __future__ import annotations

import gzip
import json
import resource
import struct
import sys
import zlib
from pathlib import Path

import numpy as np


def _png(width: int, height: int, bit_depth: int, colour: int, data: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


def nifti_mutations(base: bytes, rng: np.random.Generator, count: int):
    """(name, bytes, gzipped) mutations of an uncompressed NIfTI-1 file's header and data."""
    for i in range(count):
        data = bytearray(base)
        kind = i % 6
        if kind == 0:  # random bytes of the header
            for _ in range(int(rng.integers(1, 6))):
                data[int(rng.integers(0, 348))] = int(rng.integers(0, 256))
        elif kind == 1:  # dimensions, from tiny to absurd
            dims = [int(rng.integers(1, 8))] + [int(v) for v in rng.choice([0, 1, 2, 5, 24, 255, 4096, 32767, -1], 7)]
            struct.pack_into("<8h", data, 40, *dims)
        elif kind == 2:  # datatype / bitpix pairs, consistent or not
            struct.pack_into("<hh", data, 70, int(rng.choice([2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1792, 2304, 0, 7])),
                             int(rng.choice([8, 16, 32, 64, 128, 0, 3])))
        elif kind == 3:  # truncated anywhere
            data = data[: int(rng.integers(0, len(data)))]
        elif kind == 4:  # vox_offset and scaling
            struct.pack_into("<f", data, 108, float(rng.choice([0.0, 352.0, 1e9, -5.0, 351.0, float("nan")])))
            struct.pack_into("<ff", data, 112, float(rng.choice([0.0, 1.0, float("nan"), 1e30])), float(rng.normal()))
        else:  # random bytes of the data
            for _ in range(int(rng.integers(1, 50))):
                data[int(rng.integers(352, len(data)))] = int(rng.integers(0, 256))
        yield f"n{i:04d}", bytes(data), bool(i % 2)


def png_mutations(rng: np.random.Generator, count: int):
    """(name, bytes) PNGs with declared sizes and pixel formats that their data may not hold."""
    for i in range(count):
        width, height = (int(v) for v in rng.choice([1, 7, 24, 300, 70000, 2**31 - 1], 2))
        bit_depth = int(rng.choice([1, 2, 4, 8, 16, 3]))
        colour = int(rng.choice([0, 2, 3, 4, 6, 5]))
        payload = rng.integers(0, 256, int(rng.integers(0, 4000)), dtype=np.uint8).tobytes()
        blob = bytearray(_png(width, height, bit_depth, colour, payload))
        if i % 3 == 0:
            blob = blob[: int(rng.integers(8, len(blob)))]
        elif i % 3 == 1:
            blob[int(rng.integers(8, len(blob)))] ^= 0xFF
        yield f"p{i:04d}", bytes(blob)


def main(workdir: Path, seed: int, count: int, cap_mb: int) -> dict:
    import SimpleITK as sitk

    from medsam2.errors import MedSAM2Error
    from medsam2.io.limits import ReadLimits
    from medsam2.io.readers import load_volume

    workdir.mkdir(parents=True, exist_ok=True)
    ct = sitk.ReadImage(str(Path(__file__).resolve().parents[1] / "src" / "medsam2" / "data" / "example_ct_sm.nii.gz"))
    crop = ct[40:72, 30:62, 12:16]
    sitk.WriteImage(crop, str(workdir / "base.nii"))
    base = (workdir / "base.nii").read_bytes()
    limits = ReadLimits(cap_mb * 1024**2)
    rng = np.random.default_rng(seed)
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {"cases": 0, "refused": 0, "loaded": 0, "unexpected": [], "oversized": []}

    def attempt(path: Path) -> None:
        summary["cases"] += 1
        try:
            volume = load_volume(path, limits=limits)
        except MedSAM2Error:
            summary["refused"] += 1
            return
        except Exception as exc:  # what the test exists to find
            summary["unexpected"].append(f"{path.name}: {type(exc).__name__}: {exc}"[:300])
            return
        summary["loaded"] += 1
        capacity = path.stat().st_size * (1032 if path.name.endswith((".gz", ".png")) else 1)
        # a voxel may widen from 1 stored byte to 8 (scaling to float64): past that the file cannot hold it
        if volume.array.nbytes > limits.max_bytes or volume.array.nbytes > capacity * 8:
            summary["oversized"].append(f"{path.name}: {volume.array.shape} {volume.array.dtype} from {path.stat().st_size} bytes")

    for name, blob, gzipped in nifti_mutations(base, rng, count):
        path = workdir / (f"{name}.nii.gz" if gzipped else f"{name}.nii")
        path.write_bytes(gzip.compress(blob) if gzipped else blob)
        attempt(path)
        path.unlink()
    for name, blob in png_mutations(rng, max(1, count // 3)):
        path = workdir / f"{name}.png"
        path.write_bytes(blob)
        attempt(path)
        path.unlink()
    summary["baseline_mb"] = round(baseline_mb, 1)
    summary["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return summary


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
