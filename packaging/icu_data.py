"""Qt's ICU data library, trimmed to what the frozen app can reach (about 29 of its 31 MB left out).

Qt Core links ICU for collation (QCollator: the file dialog sorts names with it), case mapping, time-zone
display names and legacy text codecs. PySide6 ships ICU's whole data library, mostly what Qt never asks
ICU for (locale, currency, unit and language names, transliterators, number spell-out rules, break
iterator dictionaries) or what the app never needs (the codec tables of legacy encodings, and the
locale data of languages other than English: the window is English only).

Kept: every item that is not locale data (normalisation, properties, codec aliases, time-zone rules,
likely subtags...), the root and English locales of the main, collation and time-zone trees, and root
collation. Under another locale, collation falls back to root (the Unicode default order), as ICU does
for any locale it lacks.

The trimmed archive (ICU's "common data" format: a header, a table of contents sorted by name, items
aligned to 16 bytes) is linked with the C compiler into a library of the same name exporting the same
entry point, which ICU finds by that symbol as before.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from elftools.elf.elffile import ELFFile

DROPPED_TREES = {"brkitr", "curr", "lang", "rbnf", "region", "translit", "unit"}
LOCALE = re.compile(r"[a-z]{2,3}(_[A-Za-z0-9]+)*")  # en, zh_Hant_TW, es_419 (not pool, root, metaZones)
ENTRY_POINT = re.compile(r"icudt\d+_dat")
ALIGN = 16


class IcuDataError(RuntimeError):
    """The library is not ICU data in the form this trimming understands."""


def kept(name: str) -> bool:
    """Whether an item of the archive (``icudt73l/coll/de.res``) stays in the trimmed one."""
    parts = name.split("/")[1:]
    stem, _, ext = parts[-1].rpartition(".")
    if (len(parts) > 1 and parts[0] in DROPPED_TREES) or ext == "cnv":
        return False
    locale = LOCALE.fullmatch(stem) and stem != "res_index"  # every tree's index of its locales stays
    return not (ext == "res" and locale and stem != "en" and not stem.startswith("en_"))


def read_archive(library: Path) -> tuple[str, bytes]:
    """The entry point's name and the archive it exports (the symbol's bytes)."""
    with open(library, "rb") as f:
        elf = ELFFile(f)
        symbols = elf.get_section_by_name(".dynsym")
        found = [
            s
            for s in (symbols.iter_symbols() if symbols else [])
            if ENTRY_POINT.fullmatch(s.name) and s["st_shndx"] != "SHN_UNDEF"
        ]
        if len(found) != 1:
            raise IcuDataError(f"{library}: no single ICU data entry point (icudtNN_dat) among its symbols")
        symbol = found[0]
        section = elf.get_section(symbol["st_shndx"])
        f.seek(section["sh_offset"] + symbol["st_value"] - section["sh_addr"])
        return symbol.name, f.read(symbol["st_size"])


def trimmed_archive(archive: bytes, keep=kept) -> tuple[bytes, int, int]:
    """The archive with only the items ``keep`` accepts; (archive, items kept, items in all)."""
    header_size, magic1, magic2 = struct.unpack_from("<HBB", archive)
    if (magic1, magic2) != (0xDA, 0x27) or archive[12:16] != b"CmnD" or archive[8] != 0:
        raise IcuDataError("not a little-endian ICU common data archive (magic, 'CmnD' format)")
    toc = archive[header_size:]
    (count,) = struct.unpack_from("<I", toc)
    entries = [struct.unpack_from("<II", toc, 4 + 8 * i) for i in range(count)]
    names = [toc[n : toc.index(b"\0", n)].decode("ascii") for n, _ in entries]
    ends = [offset for _, offset in entries[1:]] + [len(toc)]
    items = [(name, toc[start:end]) for name, (_, start), end in zip(names, entries, ends) if keep(name)]

    names_blob = b"".join(name.encode("ascii") + b"\0" for name, _ in items)
    offset = 4 + 8 * len(items) + len(names_blob)
    table, data = [], bytearray()
    name_offset = 4 + 8 * len(items)
    for name, item in items:
        padding = -(offset + len(data)) % ALIGN
        data += b"\0" * padding
        table.append(struct.pack("<II", name_offset, offset + len(data)))
        name_offset += len(name) + 1
        data += item
    new_toc = struct.pack("<I", len(items)) + b"".join(table) + names_blob + bytes(data)
    if -header_size % ALIGN:
        raise IcuDataError(f"header of {header_size} bytes leaves the items unaligned")
    return archive[:header_size] + new_toc, len(items), count


def build_trimmed_library(library: Path, out_dir: Path) -> tuple[Path, int, int]:
    """Write the trimmed library under ``out_dir`` with ``library``'s file name; (path, items kept, items)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise IcuDataError("no C compiler (cc) to link the trimmed ICU data")
    symbol, archive = read_archive(library)
    trimmed, kept_items, items = trimmed_archive(archive)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / library.name
    with tempfile.TemporaryDirectory() as scratch:
        blob, source = Path(scratch) / "data.bin", Path(scratch) / "data.s"
        blob.write_bytes(trimmed)
        source.write_text(
            f".section .rodata\n.globl {symbol}\n.type {symbol}, @object\n.balign {ALIGN}\n"
            f'{symbol}:\n.incbin "{blob}"\n'
            f'.size {symbol}, .-{symbol}\n.section .note.GNU-stack,"",@progbits\n'
        )
        link = [compiler, "-shared", "-nostdlib", f"-Wl,-soname,{library.name}", "-o", str(out), str(source)]
        linked = subprocess.run(link, capture_output=True, text=True)
        if linked.returncode != 0:
            raise IcuDataError(f"linking the trimmed ICU data failed: {linked.stderr.strip()[-500:]}")
    return out, kept_items, items
