"""A small reader for MATLAB level-5 MAT-files (the format of SVHN's train_32x32.mat), numpy only.

Layout (MATLAB "MAT-File Format", level 5): a 128-byte header (116 bytes of text, 8 bytes of
subsystem offset, version 0x0100, endian indicator 'IM' for little-endian / 'MI' for big-endian),
then data elements. Each element has an 8-byte tag (type, byte count) or, when the count is <= 4,
a 4-byte "small" tag (count in the upper 16 bits) with the data in the next 4 bytes. Elements are
padded to 8 bytes, except compressed ones (miCOMPRESSED: a zlib stream holding one element).
A numeric array (miMATRIX) holds sub-elements: array flags (class), dimensions, name, real part
(stored in any numeric type; converted to the class's dtype), and an imaginary part if complex.
Data are in column-major (Fortran) order.

Only numeric, non-sparse arrays are read; other elements (cells, structs, ...) are skipped.
MATLAB v7.3 files are HDF5 and are not read.
"""
from __future__ import annotations

import struct
import zlib
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

MI_MATRIX = 14
MI_COMPRESSED = 15

# Data types of stored data (miINT8 ... miUINT64).
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
# Array classes (mxDOUBLE_CLASS ... mxUINT64_CLASS) and the dtype each array is returned in.
_MX_DTYPES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
_COMPLEX_FLAG = 0x0800


class MatFileError(ValueError):
    """The file is not a level-5 MAT-file, or it is truncated or malformed."""


class _Reader:
    def __init__(self, buf: bytes, order: str, where: str):
        self.buf, self.order, self.where = buf, order, where

    def tag(self, pos: int, end: int) -> Tuple[int, int, int, int]:
        """-> (type, nbytes, data_start, next_element_pos) for the element at ``pos``."""
        if pos + 8 > end:
            raise MatFileError(f"{self.where}: truncated: element tag at byte {pos} runs past the end ({end})")
        word, nbytes = struct.unpack_from(self.order + "II", self.buf, pos)
        if word >> 16:  # small data element: count in the upper half, data in the next 4 bytes
            return word & 0xFFFF, word >> 16, pos + 4, pos + 8
        start = pos + 8
        if start + nbytes > end:
            raise MatFileError(
                f"{self.where}: truncated: element at byte {pos} claims {nbytes} bytes, "
                f"only {end - start} remain"
            )
        padded = nbytes if word == MI_COMPRESSED else (nbytes + 7) // 8 * 8
        return word, nbytes, start, min(start + padded, end)

    def numeric(self, pos: int, end: int) -> Tuple[np.ndarray, int]:
        mi, nbytes, start, nxt = self.tag(pos, end)
        if mi not in _MI_DTYPES:
            raise MatFileError(f"{self.where}: unsupported data type {mi} at byte {pos}")
        dt = np.dtype(_MI_DTYPES[mi]).newbyteorder(self.order)
        if nbytes % dt.itemsize:
            raise MatFileError(f"{self.where}: {nbytes} bytes is not a whole number of {dt} at byte {pos}")
        return np.frombuffer(self.buf, dtype=dt, count=nbytes // dt.itemsize, offset=start), nxt

    def matrix(self, start: int, end: int) -> Tuple[str, Optional[np.ndarray]]:
        """Parse the sub-elements of an miMATRIX body; -> (name, array or None if not numeric)."""
        flags, pos = self.numeric(start, end)
        if flags.size < 2:
            raise MatFileError(f"{self.where}: malformed array flags at byte {start}")
        cls, is_complex = int(flags[0]) & 0xFF, bool(int(flags[0]) & _COMPLEX_FLAG)
        dims, pos = self.numeric(pos, end)
        raw_name, pos = self.numeric(pos, end)
        name = raw_name.tobytes().decode("ascii", errors="replace")
        if cls not in _MX_DTYPES:
            return name, None
        real, pos = self.numeric(pos, end)
        shape = tuple(int(d) for d in dims)
        if int(np.prod(shape, dtype=np.int64)) != real.size:
            raise MatFileError(
                f"{self.where}: array {name!r} has dimensions {shape} but {real.size} stored values "
                f"(truncated or malformed)"
            )
        out = real.astype(_MX_DTYPES[cls], copy=False)
        if is_complex:
            imag, pos = self.numeric(pos, end)
            out = out + 1j * imag.astype(_MX_DTYPES[cls], copy=False)
        return name, out.reshape(shape, order="F")


def _peek_name(reader: _Reader) -> Optional[str]:
    try:
        pos = 8
        _, _, _, pos = reader.tag(pos, len(reader.buf))  # flags
        _, _, _, pos = reader.tag(pos, len(reader.buf))  # dims
        raw, _ = reader.numeric(pos, len(reader.buf))
        return raw.tobytes().decode("ascii", errors="replace")
    except MatFileError:
        return None


def read_mat(path: str, names: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
    """The numeric arrays of a level-5 MAT-file, by name (``names``: only these)."""
    with open(path, "rb") as f:
        buf = f.read()
    return parse_mat(buf, names, where=path)


def parse_mat(buf: bytes, names: Optional[Iterable[str]] = None, where: str = "<bytes>") -> Dict[str, np.ndarray]:
    wanted = None if names is None else set(names)
    if len(buf) < 128:
        raise MatFileError(f"{where}: truncated: {len(buf)} bytes, shorter than the 128-byte MAT-file header")
    text = buf[:116]
    if text.startswith(b"MATLAB 7.3") or buf[:8] == b"\x89HDF\r\n\x1a\n":
        raise MatFileError(f"{where}: a MATLAB v7.3 (HDF5) file; only level-5 MAT-files are read")
    endian = buf[126:128]
    if endian == b"IM":
        order = "<"
    elif endian == b"MI":
        order = ">"
    else:
        raise MatFileError(f"{where}: not a level-5 MAT-file (endian indicator {endian!r})")
    out: Dict[str, np.ndarray] = {}
    top = _Reader(buf, order, where)
    pos, end = 128, len(buf)
    while pos < end:
        mi, nbytes, start, nxt = top.tag(pos, end)
        if mi == MI_COMPRESSED:
            data = buf[start:start + nbytes]
            if wanted is not None:  # decompress a little first to skip unwanted arrays cheaply
                head = zlib.decompressobj().decompress(data, 512)
                name = _peek_name(_Reader(head, order, where)) if len(head) >= 8 else None
                if name is not None and name not in wanted:
                    pos = nxt
                    continue
            try:
                d = zlib.decompressobj()
                inner = d.decompress(data)
                if not d.eof:
                    raise MatFileError(f"{where}: truncated: compressed element at byte {pos} ends early")
            except zlib.error as e:
                raise MatFileError(f"{where}: corrupt compressed element at byte {pos} ({e})") from e
            sub = _Reader(inner, order, where)
            mi2, _, s2, _ = sub.tag(0, len(inner))
            if mi2 == MI_MATRIX:
                name, arr = sub.matrix(s2, len(inner))
                if arr is not None and (wanted is None or name in wanted):
                    out[name] = arr
        elif mi == MI_MATRIX:
            name, arr = top.matrix(start, start + nbytes)
            if arr is not None and (wanted is None or name in wanted):
                out[name] = arr
        pos = nxt
    if wanted is not None and not wanted <= set(out):
        raise MatFileError(f"{where}: missing array(s) {sorted(wanted - set(out))}")
    return out
