"""Quick validation of a GGUF model file before handing it to llama.cpp.

This module owns :func:`check_model_file`: it streams only the GGUF header (metadata and
tensor infos, never tensor data), and turns the usual mistakes (missing file, directory,
not GGUF, unsupported version, truncated download) into a one-line :class:`ModelFileError`
saying what is wrong and what to do. It returns the parsed :class:`GGUFHeader`.
"""

import os
import struct
from dataclasses import dataclass, field
from typing import IO, Any

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_STORED_ARRAY = 1024
MAX_DIMS = 16

# ggml type id -> (elements per block, bytes per block)
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 36),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
}

# GGUF metadata value type -> struct format of a scalar (8 = string, 9 = array)
_SCALAR_FORMATS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


class ModelFileError(ValueError):
    """The model file is unusable; the message is one line with the problem and the fix."""


@dataclass
class GGUFHeader:
    """The parsed header of a GGUF file (huge arrays are stored as their length)."""

    version: int
    tensor_count: int
    metadata: dict[str, Any] = field(default_factory=dict)
    data_start: int = 0
    data_end: int = 0

    @property
    def architecture(self) -> str | None:
        """``general.architecture`` (e.g. "llama"), if present."""
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    @property
    def name(self) -> str | None:
        """``general.name``, if present."""
        value = self.metadata.get("general.name")
        return value if isinstance(value, str) else None

    @property
    def context_length(self) -> int | None:
        """``{arch}.context_length``: the model's trained context, if present."""
        value = self.metadata.get(f"{self.architecture}.context_length")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def chat_template(self) -> str | None:
        """``tokenizer.chat_template``, if present."""
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None


class _Truncated(Exception):
    """Raised internally when the header runs past the end of the file."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _Corrupt(Exception):
    """Raised internally when the header holds an impossible value."""


class _Reader:
    """Bounds-checked little-endian reads from a file object of known size."""

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self.handle = handle
        self.size = size
        self.pos = 0

    def read(self, count: int, what: str) -> bytes:
        if count > self.size - self.pos:
            raise _Truncated(what)
        data = self.handle.read(count)
        if len(data) != count:
            raise _Truncated(what)
        self.pos += count
        return data

    def skip(self, count: int, what: str) -> None:
        if count > self.size - self.pos:
            raise _Truncated(what)
        self.handle.seek(count, os.SEEK_CUR)
        self.pos += count

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt), what))[0]

    def u32(self, what: str) -> int:
        return int(self.unpack("<I", what))

    def u64(self, what: str) -> int:
        return int(self.unpack("<Q", what))

    def string(self, what: str) -> str:
        length = self.u64(what)
        return self.read(length, what).decode("utf-8", errors="replace")

    def skip_string(self, what: str) -> None:
        self.skip(self.u64(what), what)


def _read_value(reader: _Reader, value_type: int, key: str) -> Any:
    what = f"metadata value {key!r}"
    if value_type in _SCALAR_FORMATS:
        return reader.unpack(_SCALAR_FORMATS[value_type], what)
    if value_type == _STRING:
        return reader.string(what)
    if value_type == _ARRAY:
        return _read_array(reader, key)
    raise _Corrupt(f"unknown metadata value type {value_type} for key {key!r}")


def _skip_value(reader: _Reader, value_type: int, key: str) -> None:
    what = f"metadata value {key!r}"
    if value_type in _SCALAR_FORMATS:
        reader.skip(struct.calcsize(_SCALAR_FORMATS[value_type]), what)
    elif value_type == _STRING:
        reader.skip_string(what)
    elif value_type == _ARRAY:
        _read_array(reader, key, store=False)
    else:
        raise _Corrupt(f"unknown metadata value type {value_type} for key {key!r}")


def _read_array(reader: _Reader, key: str, store: bool = True) -> Any:
    """Read an array value; arrays of MAX_STORED_ARRAY or more elements become their length."""
    what = f"metadata array {key!r}"
    elem_type = reader.u32(what)
    count = reader.u64(what)
    if store and count < MAX_STORED_ARRAY:
        return [_read_value(reader, elem_type, key) for _ in range(count)]
    if elem_type in _SCALAR_FORMATS:
        size = struct.calcsize(_SCALAR_FORMATS[elem_type])
        reader.skip(count * size, what)
    else:
        for _ in range(count):
            _skip_value(reader, elem_type, key)
    return count


def _read_metadata(reader: _Reader, kv_count: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for index in range(kv_count):
        key = reader.string(f"metadata key #{index}")
        value_type = reader.u32(f"metadata type of {key!r}")
        metadata[key] = _read_value(reader, value_type, key)
    return metadata


def _tensor_nbytes(dims: list[int], ggml_type: int) -> int | None:
    sizes = GGML_TYPE_SIZES.get(ggml_type)
    if sizes is None:
        return None
    n_elements = 1
    for dim in dims:
        n_elements *= dim
    block_size, type_size = sizes
    return n_elements // block_size * type_size


def _read_tensor_extent(reader: _Reader, tensor_count: int) -> int:
    """Read the tensor infos; return the largest offset + nbytes (relative to data start)."""
    extent = 0
    for index in range(tensor_count):
        what = f"tensor info #{index}"
        name = reader.string(what)
        n_dims = reader.u32(what)
        if n_dims > MAX_DIMS:
            raise _Corrupt(f"tensor {name!r} claims {n_dims} dimensions")
        dims = [reader.u64(what) for _ in range(n_dims)]
        ggml_type = reader.u32(what)
        offset = reader.u64(what)
        nbytes = _tensor_nbytes(dims, ggml_type)
        if nbytes is not None:
            extent = max(extent, offset + nbytes)
    return extent


def _alignment(metadata: dict[str, Any]) -> int:
    value = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise _Corrupt(f"general.alignment is {value!r}, not a power of two")
    return value


def _check_magic_and_version(path: str, reader: _Reader) -> int:
    if reader.size == 0:
        raise ModelFileError(f"{path} is empty (0 bytes); download it again")
    magic = reader.handle.read(4)
    reader.pos = len(magic)
    if magic != GGUF_MAGIC:
        hint = f"it starts with {magic!r}, not {GGUF_MAGIC!r}"
        if magic in (b"lmgg", b"fmgg", b"tjgg"):
            hint += ": an old GGML/GGJT file"
        raise ModelFileError(
            f"{path} is not a GGUF file ({hint}); "
            "convert it with llama.cpp's convert scripts or download a .gguf"
        )
    version = reader.u32("the version")
    if version not in SUPPORTED_VERSIONS:
        endian = " (big-endian files are not supported)" if version >= 1 << 24 else ""
        raise ModelFileError(
            f"{path} has GGUF version {version}{endian}, but only versions 2 and 3 are "
            "supported; re-convert it with a current llama.cpp or download a newer .gguf"
        )
    return version


def _parse(path: str, handle: IO[bytes], size: int) -> GGUFHeader:
    reader = _Reader(handle, size)
    version = _check_magic_and_version(path, reader)
    tensor_count = reader.u64("the tensor count")
    kv_count = reader.u64("the metadata count")
    metadata = _read_metadata(reader, kv_count)
    extent = _read_tensor_extent(reader, tensor_count)
    alignment = _alignment(metadata)
    data_start = -(-reader.pos // alignment) * alignment
    # Without tensor data, llama.cpp does not need the alignment padding to be present.
    data_end = data_start + extent if extent else reader.pos
    return GGUFHeader(version, tensor_count, metadata, data_start, data_end)


def _open(path: str) -> IO[bytes]:
    if not os.path.exists(path):
        raise ModelFileError(
            f"model file not found: {path}; pass an absolute path to a .gguf file with --model"
        )
    if os.path.isdir(path):
        raise ModelFileError(
            f"{path} is a directory, not a model file; pass the path of a .gguf file with --model"
        )
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ModelFileError(
            f"cannot read model file {path}: {exc.strerror or exc}; check its permissions"
        ) from None


def check_model_file(path: str) -> GGUFHeader:
    """Validate a GGUF file by reading its header only; raise ModelFileError if unusable."""
    with _open(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            header = _parse(path, handle, size)
        except _Truncated as exc:
            raise ModelFileError(
                f"{path} is truncated (the file ends at byte {size} while reading {exc.what}); "
                "download it again"
            ) from None
        except _Corrupt as exc:
            raise ModelFileError(
                f"{path} is corrupt ({exc}); download it again or re-convert it"
            ) from None
        except OSError as exc:
            raise ModelFileError(f"cannot read model file {path}: {exc}") from None
    if size < header.data_end:
        raise ModelFileError(
            f"{path} is truncated ({size} bytes, but its tensor data needs {header.data_end} "
            "bytes); download it again"
        )
    return header
