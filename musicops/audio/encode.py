"""Deterministic encoding (WAV/FLAC PCM_24, Ogg Vorbis) with tags in the file's own metadata.

Assets are content-addressed, so the same samples and tags must give the same bytes: no
timestamps, and Ogg's random stream serial is replaced by a fixed one (pages rewritten, CRCs
recomputed here). Tags are cut to what each container keeps, so a long prompt never fails a clip;
`read_tags` reads them back, extras unpacked from the JSON comment.
"""

from __future__ import annotations

import io
import json
import os
import re
import zlib

import numpy as np

from musicops.audio.io import AudioError

# soundfile's string fields; anything else travels JSON-encoded inside 'comment'.
TAG_FIELDS = ("title", "copyright", "software", "artist", "comment", "date", "album", "license",
              "tracknumber", "genre")
_TAG_PREFIX = "musicops-tags:"
# Bytes of UTF-8 each container keeps per text field (without the terminator). WAV: libsndfile
# reads an INFO sub-chunk only if it fits a 2 KiB buffer (text + NUL, padded to even), so 2045.
# 'software' passes through a 128-byte buffer in every format, with " (libsndfile-x.y.z)" appended.
# FLAC and Vorbis comments hold far more; the cap only bounds a file's header.
_FIELD_BYTES = {"wav": 2045, "flac": 32_768, "ogg": 32_768}
_SOFTWARE_BYTES = 96
_UNSUPPORTED_FIELDS = {"wav": frozenset({"license"})}  # no INFO chunk: travels in the JSON comment
_FORMATS = {"wav": ("WAV", "PCM_24"), "flac": ("FLAC", "PCM_24"), "ogg": ("OGG", "VORBIS")}
_LIBSNDFILE_SUFFIX = re.compile(r" \(libsndfile-[^)]*\)$")
_OGG_SERIAL = 0x6D75_736F  # fixed stream serial ("muso"); libsndfile picks a random one per file


def encode(samples: np.ndarray, sample_rate: int, fmt: str, tags: dict[str, str] | None = None) -> bytes:
    """Encode to wav/flac (PCM_24) or ogg (Vorbis) bytes with `tags` in the file's own metadata.

    Output is deterministic (no timestamps; Ogg's random stream serial is replaced by a fixed one)
    because assets are content-addressed: the same samples and tags must give the same bytes.
    Samples are clipped to [-1, 1]. Tags are cut to what the container keeps (`_FIELD_BYTES`, on a
    UTF-8 character boundary; NULs and lone surrogates cannot be stored), so a long prompt never
    fails a clip; `read_tags` returns the cut values. Raises AudioError if the container still
    dropped a tag.
    """
    import soundfile as sf

    key = fmt.lower().lstrip(".")
    if key not in _FORMATS:
        raise ValueError(f"unsupported format {fmt!r}; expected one of {sorted(_FORMATS)}")
    container, subtype = _FORMATS[key]
    data = np.asarray(samples, dtype=np.float32)
    data = data[:, None] if data.ndim == 1 else data
    if data.ndim != 2 or data.shape[0] == 0:
        raise AudioError(f"<{key} bytes>", f"expected non-empty (frames, channels) audio, got {data.shape}")
    if not np.isfinite(data).all():
        raise AudioError(f"<{key} bytes>", "refusing to encode NaN/Inf samples")
    data = np.clip(data, -1.0, 1.0)
    fields = _tags_to_fields(tags or {}, key)

    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", samplerate=int(sample_rate), channels=data.shape[1],
                      format=container, subtype=subtype) as handle:
        for name in sorted(fields):  # strings go in before audio (FLAC writes them in its header)
            setattr(handle, name, fields[name])
        handle.write(data)
    encoded = buffer.getvalue()
    if key == "ogg":
        encoded = _fix_ogg_serial(encoded, _OGG_SERIAL)
    if fields:
        written = read_tags(encoded)
        expected = _fields_to_tags(fields)
        lost = sorted(k for k in expected if written.get(k) != expected[k])
        if lost:
            raise AudioError(f"<{key} bytes>", f"container dropped tags {lost} (too long for {key}?)")
    return encoded


def read_tags(data_or_path: bytes | str | os.PathLike[str]) -> dict[str, str]:
    """Tags written by `encode` (or any file's soundfile string fields), extras unpacked from 'comment'."""
    import soundfile as sf

    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes | bytearray) else str(data_or_path)
    try:
        with sf.SoundFile(source) as handle:
            fields = handle.copy_metadata()
    except Exception as exc:  # libsndfile raises several types; all mean "not decodable"
        name = "<bytes>" if isinstance(source, io.BytesIO) else source
        raise AudioError(name, f"not a readable audio file ({exc})") from exc
    return _fields_to_tags(fields)


def truncate_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never inside a character."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[: max(0, max_bytes)].decode("utf-8", "ignore")  # drops only the split last character


def _storable(value: object) -> str:
    """Text libsndfile can hold: C strings end at NUL, and lone surrogates have no UTF-8."""
    text = str(value).replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8")


def _tags_to_fields(tags: dict[str, str], fmt: str = "flac") -> dict[str, str]:
    """Known, non-empty keys go to their soundfile field; the rest travel as JSON in 'comment'.
    Every field is cut to the bytes `fmt` keeps (the JSON by shortening its longest values)."""
    limit = _FIELD_BYTES.get(fmt, min(_FIELD_BYTES.values()))
    unsupported = _UNSUPPORTED_FIELDS.get(fmt, frozenset())
    fields: dict[str, str] = {}
    extra: dict[str, str] = {}
    for key, value in tags.items():
        text = _storable(value)
        if (key in TAG_FIELDS and key not in unsupported and text
                and not (key == "comment" and text.startswith(_TAG_PREFIX))):
            fields[key] = truncate_utf8(text, _SOFTWARE_BYTES if key == "software" else limit)
        else:
            extra[_storable(key)] = text
    if extra:
        if "comment" in fields:
            extra["comment"] = _storable(tags["comment"])
        fields["comment"] = _pack_extras(extra, limit)
    return fields


def _pack_extras(extra: dict[str, str], limit: int) -> str:
    """The extras as prefixed JSON within `limit` bytes: the longest value is shortened until it fits,
    so the comment stays valid JSON (only if the keys alone overflow is the text cut, then read back
    verbatim)."""
    values = dict(extra)

    def pack() -> str:
        return _TAG_PREFIX + json.dumps(values, sort_keys=True, separators=(",", ":"))

    while len(pack().encode("utf-8")) > limit:
        longest = max(sorted(values), key=lambda k: len(values[k]))
        text = values[longest]
        if not text:
            return truncate_utf8(pack(), limit)
        low, high = 0, len(text) - 1  # longest prefix of `text` that fits (0 = none does)
        while low < high:
            middle = (low + high + 1) // 2
            values[longest] = text[:middle]
            if len(pack().encode("utf-8")) <= limit:
                low = middle
            else:
                high = middle - 1
        values[longest] = text[:low]
    return pack()


def _fields_to_tags(fields: dict[str, str]) -> dict[str, str]:
    tags = dict(fields)
    if "software" in tags:  # libsndfile appends its own version to whatever software string it is given
        tags["software"] = _LIBSNDFILE_SUFFIX.sub("", tags["software"])
    comment = tags.get("comment", "")
    if comment.startswith(_TAG_PREFIX):
        del tags["comment"]
        try:
            tags.update({str(k): str(v) for k, v in json.loads(comment[len(_TAG_PREFIX):]).items()})
        except (ValueError, AttributeError):
            tags["comment"] = comment  # not ours after all; keep it verbatim
    return tags


_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 (poly 0x04C11DB7, unreflected, init 0) from zlib's reflected CRC on bit-reversed bytes."""
    reflected = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def _fix_ogg_serial(data: bytes, serial: int) -> bytes:
    """Rewrite every page's stream serial to `serial` and recompute the page CRCs."""
    out = bytearray(data)
    position = 0
    while position < len(out):
        if out[position: position + 4] != b"OggS" or position + 27 > len(out):
            raise AudioError("<ogg bytes>", f"unexpected Ogg page layout at byte {position}")
        segments = out[position + 26]
        length = 27 + segments + sum(out[position + 27: position + 27 + segments])
        out[position + 14: position + 18] = serial.to_bytes(4, "little")
        out[position + 22: position + 26] = b"\0\0\0\0"
        crc = _ogg_crc(bytes(out[position: position + length]))
        out[position + 22: position + 26] = crc.to_bytes(4, "little")
        position += length
    return bytes(out)
