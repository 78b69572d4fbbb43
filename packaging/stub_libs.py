"""Stand-ins for shared libraries that are loaded but never called: same name, same symbols, no code.

Some libraries the app ships only because another library names them as a dependency (``NEVER_CALLED``
says which). The loader maps them all at start, so PyInstaller cannot leave them out; a missing one stops
the import.

A stand-in exports every symbol the library exports (same sizes for data, same symbol versions), under
the same SONAME, so the loader is satisfied. Calling one of its functions prints which library was left
out of the installer and aborts, instead of running on with a wrong answer, except for the few
functions FFmpeg calls at start whatever it is used for (``CALLED_AT_START``): those answer zero, and
a codec opened anyway after such an answer would crash (the app opens none of them).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerSymSection

# Functions FFmpeg calls whether or not the app uses what they serve: the capability probes of its codecs'
# static initialisers (run for every codec when it first lists them), and TLS set-up and tear-down
# (PyAV initialises networking on import). Zero answers "no extra abilities" and "done".
CALLED_AT_START = re.compile(
    r"x265_api_get_\d+|aom_codec_(version|av1_cx|get_caps)|vpx_codec_(version|vp[89]_cx|get_caps)"
    r"|gnutls_global_init|gnutls_global_deinit"
)


# Per wheel's library folder, the libraries (by name prefix) that get stand-ins. PyAV's FFmpeg links every
# encoder it was built with (the app records H.264 with x264) and TLS for network streams (ALSA's library,
# for capture devices, keeps old symbol versions beside the current ones: a stand-in cannot copy it).
# OpenCV's FFmpeg decodes nothing: PyAV reads files, and a runtime hook turns OpenCV's backend off
# (packaging/hooks/rth_opencv_ffmpeg_off.py). OpenCV's OpenBLAS serves linear algebra (solve, SVD, large
# gemm) that the app's OpenCV calls (colour, filters, warps, optical flow) never reach.
NEVER_CALLED = {
    "av.libs": (
        "libx265",
        "libSvtAv1Enc",
        "libaom",
        "libvpx",
        "libopenh264",
        "libvorbisenc",
        "libmp3lame",
        "libopus",
        "libspeex",
        "libopencore",
        "libvpl",
        "libgnutls",
    ),
    "opencv_python_headless.libs": (
        "libavcodec",
        "libavformat",
        "libavutil",
        "libswscale",
        "libswresample",
        "libopenblas",
    ),
}
CRT = {"", "_init", "_fini"}


class StubError(RuntimeError):
    """The library cannot be replaced by a stand-in (no compiler, an ELF feature it does not copy)."""


class Symbol(NamedTuple):
    name: str
    is_function: bool
    size: int
    version: str | None  # the version node it is defined in (None: unversioned or the library's base)


def exported_symbols(library: Path) -> tuple[str, list[Symbol]]:
    """The library's SONAME and the symbols it defines for others."""
    with open(library, "rb") as f:
        try:
            elf = ELFFile(f)
        except ELFError as exc:
            raise StubError(f"{library.name}: not an ELF library ({exc})") from exc
        dynamic = next((s for s in elf.iter_sections() if isinstance(s, DynamicSection)), None)
        sonames = [tag.soname for tag in dynamic.iter_tags("DT_SONAME")] if dynamic else []
        if len(sonames) != 1:
            raise StubError(f"{library.name}: no SONAME")
        versym = next((s for s in elf.iter_sections() if isinstance(s, GNUVerSymSection)), None)
        verdef = next((s for s in elf.iter_sections() if isinstance(s, GNUVerDefSection)), None)
        names = {}
        if verdef is not None:
            for definition, aux in verdef.iter_versions():
                if not definition["vd_flags"] & 1:  # VER_FLG_BASE is the library's own name, not a node
                    names[definition["vd_ndx"]] = next(aux).name
        symbols = []
        dynsym = elf.get_section_by_name(".dynsym")
        for i, sym in enumerate(dynsym.iter_symbols()):
            kind, bind = sym["st_info"]["type"], sym["st_info"]["bind"]
            # SHN_ABS: the version nodes' own names, which the linker makes from the version script
            # _init/_fini come with every library the compiler links, the stand-in included
            if sym["st_shndx"] in ("SHN_UNDEF", "SHN_ABS") or bind not in ("STB_GLOBAL", "STB_WEAK") or sym.name in CRT:
                continue
            # NOTYPE: assembly labels; LOOS: pyelftools' name for GNU_IFUNC (code chosen per CPU at load)
            if kind not in ("STT_FUNC", "STT_OBJECT", "STT_LOOS", "STT_NOTYPE"):
                raise StubError(f"{library.name}: exports {sym.name} of kind {kind}, which a stand-in cannot copy")
            version = None
            if versym is not None:
                index = versym.get_symbol(i)["ndx"]
                if isinstance(index, int) and index & 0x8000:  # foo@V1 beside foo@@V2: not copied
                    raise StubError(f"{library.name}: {sym.name} has an old (hidden) version as well")
                version = names.get(index) if isinstance(index, int) else None
            symbols.append(Symbol(sym.name, kind != "STT_OBJECT", sym["st_size"], version))
        return sonames[0], symbols


def stub_source(library_name: str, symbols: list[Symbol]) -> str:
    """C source of the stand-in (symbols are named by assembler labels: any name, even a C keyword)."""
    lines = [
        "#include <stdlib.h>",
        "#include <string.h>",
        "#include <unistd.h>",
        "static void left_out(const char *name) {",
        '    static const char head[] = "stylecast: this installer left out ' + library_name + ', which ";',
        '    static const char tail[] = " needs; the app was not expected to call it\\n";',
        "    write(2, head, sizeof head - 1); write(2, name, strlen(name)); write(2, tail, sizeof tail - 1);",
        "    abort();",
        "}",
    ]
    for i, sym in enumerate(symbols):
        label = '__attribute__((visibility("default"))) '
        if not sym.is_function:
            lines.append(f'{label}char d{i}[{max(sym.size, 1)}] __asm__("{sym.name}");')
        elif CALLED_AT_START.fullmatch(sym.name):
            lines.append(f'{label}long f{i}(void) __asm__("{sym.name}");\nlong f{i}(void) {{ return 0; }}')
        else:
            lines.append(
                f'{label}void f{i}(void) __asm__("{sym.name}");\nvoid f{i}(void) {{ left_out("{sym.name}"); }}'
            )
    return "\n".join(lines) + "\n"


def version_script(symbols: list[Symbol]) -> str | None:
    """A linker version script giving each symbol its version node (None when the library has none)."""
    nodes: dict[str, list[str]] = {}
    for sym in symbols:
        if sym.version is not None:
            nodes.setdefault(sym.version, []).append(sym.name)
    if not nodes:
        return None
    return "".join(f"{node} {{ global: {' '.join(f'{n};' for n in names)} }};\n" for node, names in nodes.items())


def build_stub(library: Path, out_dir: Path) -> Path:
    """Write the stand-in for ``library`` under ``out_dir`` with the same file name."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise StubError("no C compiler (cc) to build stand-in libraries")
    soname, symbols = exported_symbols(library)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / library.name
    with tempfile.TemporaryDirectory() as scratch:
        source, script = Path(scratch) / "stub.c", Path(scratch) / "stub.map"
        source.write_text(stub_source(library.name, symbols))
        command = [compiler, "-shared", "-fPIC", "-O1", "-fvisibility=hidden", f"-Wl,-soname,{soname}"]
        versions = version_script(symbols)
        if versions is not None:
            script.write_text(versions)
            command.append(f"-Wl,--version-script={script}")
        built = subprocess.run([*command, "-o", str(out), str(source)], capture_output=True, text=True)
        if built.returncode != 0:
            raise StubError(f"building the stand-in for {library.name} failed: {built.stderr.strip()[-500:]}")
    return out


def needed(library: Path) -> list[str]:
    """The library's direct dependencies by name (DT_NEEDED)."""
    with open(library, "rb") as f:
        dynamic = next((s for s in ELFFile(f).iter_sections() if isinstance(s, DynamicSection)), None)
        return [tag.needed for tag in dynamic.iter_tags("DT_NEEDED")] if dynamic else []


def reachable(libraries: dict[str, Path], roots: list[Path]) -> set[str]:
    """Names of ``libraries`` (name → file) that the ``roots`` load, directly or through one another."""
    found: set[str] = set()
    pending = [name for root in roots for name in needed(root)]
    while pending:
        name = pending.pop()
        if name in libraries and name not in found:
            found.add(name)
            pending += needed(libraries[name])
    return found


def slim_wheel_libraries(libraries: dict[str, Path], roots: list[Path], out_dir: Path) -> dict[str, Path]:
    """The wheel libraries to ship, as ``folder/name`` → file: stand-ins for those NEVER_CALLED names,
    without those that nothing loads any more. ``libraries`` are those of NEVER_CALLED's folders; ``roots``
    the app's other binaries. A stand-in that cannot be built leaves the real library (and says so)."""
    shipped = {}
    for key, path in libraries.items():
        folder, name = key.split("/")
        if name.startswith(NEVER_CALLED[folder]):
            try:
                path = build_stub(path, out_dir / folder)
            except (StubError, OSError) as exc:
                print(f"{key} left whole: {exc}")
        shipped[key] = path
    loaded = reachable({key.split("/")[1]: path for key, path in shipped.items()}, roots)
    return {key: path for key, path in shipped.items() if key.split("/")[1] in loaded}
