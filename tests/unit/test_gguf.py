"""Tests for ggufd.gguf: header parsing and the one-line errors for unusable model files."""

import struct
from pathlib import Path
from typing import Any

import pytest

from ggufd.gguf import GGML_TYPE_SIZES, GGUFHeader, ModelFileError, check_model_file


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _value(value: Any) -> tuple[int, bytes]:
    """(GGUF value type, encoded value) for a bool, int (uint32), float, str or list."""
    if isinstance(value, bool):
        return 7, struct.pack("<?", value)
    if isinstance(value, int):
        return 4, struct.pack("<I", value)
    if isinstance(value, float):
        return 6, struct.pack("<f", value)
    if isinstance(value, str):
        return 8, _string(value)
    elem_type = _value(value[0])[0] if value else 4
    body = b"".join(_value(item)[1] for item in value)
    return 9, struct.pack("<IQ", elem_type, len(value)) + body


def build_gguf(
    metadata: dict[str, Any],
    tensors: list[tuple[str, list[int], int]],
    *,
    version: int = 3,
    magic: bytes = b"GGUF",
    alignment: int = 32,
) -> bytes:
    """A GGUF file: tensors are (name, dims, ggml type), data laid out back to back."""
    out = magic + struct.pack("<IQQ", version, len(tensors), len(metadata))
    for key, value in metadata.items():
        value_type, encoded = _value(value)
        out += _string(key) + struct.pack("<I", value_type) + encoded
    offset, data = 0, b""
    for name, dims, ggml_type in tensors:
        out += _string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", dim) for dim in dims)
        out += struct.pack("<IQ", ggml_type, offset)
        n_elements = 1
        for dim in dims:
            n_elements *= dim
        block, size = GGML_TYPE_SIZES[ggml_type]
        nbytes = n_elements // block * size
        data += b"\x01" * nbytes
        offset += nbytes
    out += b"\x00" * (-len(out) % alignment)
    return out + data


METADATA: dict[str, Any] = {
    "general.architecture": "llama",
    "general.name": "tiny",
    "llama.context_length": 2048,
    "tokenizer.chat_template": "{{ messages }}",
    "tokenizer.ggml.add_bos_token": True,
    "llama.rope.freq_base": 10000.0,
    "tokenizer.ggml.tokens": [f"t{i}" for i in range(1500)],
    "general.languages": ["en", "fr"],
}
TENSORS = [("a.weight", [4, 3], 0), ("b.weight", [8], 0)]


@pytest.fixture
def valid_bytes() -> bytes:
    return build_gguf(METADATA, TENSORS)


def _write(tmp_path: Path, data: bytes, name: str = "model.gguf") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _error(path: str) -> str:
    with pytest.raises(ModelFileError) as info:
        check_model_file(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_valid_file(tmp_path: Path, valid_bytes: bytes) -> None:
    header = check_model_file(_write(tmp_path, valid_bytes))
    assert isinstance(header, GGUFHeader)
    assert header.version == 3
    assert header.tensor_count == 2
    assert header.data_end == len(valid_bytes)
    assert header.data_start % 32 == 0
    assert header.data_end - header.data_start == (12 + 8) * 4
    assert header.architecture == "llama"
    assert header.name == "tiny"
    assert header.context_length == 2048
    assert header.chat_template == "{{ messages }}"
    assert header.metadata["tokenizer.ggml.add_bos_token"] is True
    assert header.metadata["llama.rope.freq_base"] == 10000.0
    assert header.metadata["general.languages"] == ["en", "fr"]
    assert header.metadata["tokenizer.ggml.tokens"] == 1500  # huge arrays keep their length


def test_version_2_and_custom_alignment(tmp_path: Path) -> None:
    data = build_gguf({"general.alignment": 64}, TENSORS, version=2, alignment=64)
    header = check_model_file(_write(tmp_path, data))
    assert header.version == 2
    assert header.data_start % 64 == 0
    assert header.data_end == len(data)


def test_no_tensors(tmp_path: Path) -> None:
    header = check_model_file(_write(tmp_path, build_gguf({}, [])))
    assert header.tensor_count == 0
    assert header.metadata == {}


def test_no_tensors_without_padding(tmp_path: Path) -> None:
    header = check_model_file(_write(tmp_path, b"GGUF" + struct.pack("<IQQ", 3, 0, 0)))
    assert header.data_end == 24


def test_unknown_tensor_type_is_skipped_in_size_check(tmp_path: Path) -> None:
    data = build_gguf({}, [("a", [4], 0)])
    # Patch the ggml type of the only tensor (after name, n_dims, 1 dim) to an unknown id.
    type_pos = 24 + len(_string("a")) + 4 + 8
    data = data[:type_pos] + struct.pack("<I", 999) + data[type_pos + 4 :]
    header = check_model_file(_write(tmp_path, data))
    assert header.tensor_count == 1


def test_truncated_in_tensor_data(tmp_path: Path, valid_bytes: bytes) -> None:
    path = _write(tmp_path, valid_bytes[:-10])
    message = _error(path)
    assert message.startswith(f"{path} is truncated (")
    assert message.endswith("download it again")


def test_truncated_in_header(tmp_path: Path, valid_bytes: bytes) -> None:
    path = _write(tmp_path, valid_bytes[:100])
    message = _error(path)
    assert message.startswith(f"{path} is truncated (")
    assert "metadata" in message
    assert message.endswith("download it again")


def test_truncated_after_magic(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, b"GGUF\x03\x00"))
    assert "truncated" in message


def test_wrong_magic(tmp_path: Path, valid_bytes: bytes) -> None:
    path = _write(tmp_path, b"PK\x03\x04" + valid_bytes[4:], "model.bin")
    message = _error(path)
    assert message.startswith(f"{path} is not a GGUF file (")
    assert "convert it with llama.cpp's convert scripts or download a .gguf" in message


def test_old_ggjt_file(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, b"tjgg" + b"\x00" * 64))
    assert "not a GGUF file" in message
    assert "GGJT" in message


def test_empty_file(tmp_path: Path) -> None:
    assert "is empty" in _error(_write(tmp_path, b""))


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.gguf")
    assert _error(path) == (
        f"model file not found: {path}; pass an absolute path to a .gguf file with --model"
    )


def test_directory(tmp_path: Path) -> None:
    message = _error(str(tmp_path))
    assert "is a directory" in message
    assert "--model" in message


@pytest.mark.parametrize("version", [1, 4, 0x03000000])
def test_unsupported_version(tmp_path: Path, version: int) -> None:
    message = _error(_write(tmp_path, build_gguf({}, [], version=version)))
    assert f"GGUF version {version}" in message
    assert "versions 2 and 3" in message


def test_unknown_value_type_is_corrupt(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string("k") + struct.pack("<I", 42)
    message = _error(_write(tmp_path, data + b"\x00" * 16))
    assert "corrupt" in message
    assert "42" in message


def test_huge_string_length_is_truncation(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 62)
    assert "truncated" in _error(_write(tmp_path, data))
