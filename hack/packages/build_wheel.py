#!/usr/bin/env python3
"""Builds the taskerworker wheel with libtaskerworker.so inside, from the
standard library alone (no setuptools, no network: PyPI is not reachable
everywhere this project builds). What hack/packages/build.sh runs.

    python3 hack/packages/build_wheel.py --version 0.1.0.dev93+gb869f4d \\
        --lib bin/libtaskerworker.so --out bin/packages

A wheel is a zip of the package files plus a .dist-info directory (METADATA,
WHEEL, entry_points.txt, RECORD: PEP 427, 566). The metadata comes from
bindings/python/pyproject.toml; the version from the argument (derived from
the project's VERSION by hack/packages/version.sh). The platform tag is
manylinux_2_N_<arch>, N being the newest glibc symbol version the library
needs (PEP 600), so pip refuses it where it cannot load. The Python tag is
py3-none: the package uses ctypes only, so one wheel serves every CPython 3.
The zip is reproducible: sorted entries, fixed times (SOURCE_DATE_EPOCH, else
1980-01-01) and modes.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import re
import struct
import sys
import time
import zipfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    sys.exit("build_wheel.py needs Python 3.11 or later (tomllib)")

NAME = "taskerworker"
LIB_NAME = "libtaskerworker.so"
# ELF e_machine values and the wheel's name for them.
ARCHES = {62: "x86_64", 183: "aarch64"}


def platform_tag(lib: bytes) -> str:
    """manylinux_2_N_<arch> for an ELF shared library."""
    if lib[:4] != b"\x7fELF":
        raise SystemExit("the library is not an ELF file")
    machine = struct.unpack_from("<H", lib, 18)[0]
    arch = ARCHES.get(machine)
    if arch is None:
        raise SystemExit(f"unsupported ELF machine {machine}")
    # Version names the library needs are NUL-terminated strings in .dynstr.
    needed = {(int(a), int(b)) for a, b in re.findall(rb"(?<=\x00)GLIBC_(\d+)\.(\d+)(?:\.\d+)?(?=\x00)", lib)}
    major, minor = max(needed, default=(2, 17))
    return f"manylinux_{major}_{minor}_{arch}"


def metadata(project: dict, version: str, readme: str) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {version}",
        f"Summary: {project['description']}",
        f"Requires-Python: {project['requires-python']}",
        f"License: {project['license']['text']}",
        *(f"Classifier: {c}" for c in project.get("classifiers", [])),
        *(f"Requires-Dist: {d}" for d in project.get("dependencies", [])),
        "Description-Content-Type: text/markdown",
    ]
    return "\n".join(lines) + "\n\n" + readme


def entry_points(project: dict) -> str:
    scripts = project.get("scripts", {})
    if not scripts:
        return ""
    return "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(scripts.items()))


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build(source: Path, lib_path: Path, version: str, out: Path, license_path: Path | None) -> Path:
    pyproject = tomllib.loads((source / "pyproject.toml").read_text())
    project = pyproject["project"]
    if project["name"] != NAME:
        raise SystemExit(f"pyproject.toml names {project['name']!r}, want {NAME!r}")
    lib = lib_path.read_bytes()
    tag = f"py3-none-{platform_tag(lib)}"
    dist_info = f"{NAME}-{version}.dist-info"

    files: dict[str, tuple[bytes, int]] = {}  # archive path: (data, mode)
    pkg = source / NAME
    for f in sorted(pkg.rglob("*")):
        if f.is_dir() or "__pycache__" in f.parts or f.suffix in (".pyc", ".so"):
            continue
        files[f"{NAME}/{f.relative_to(pkg).as_posix()}"] = (f.read_bytes(), 0o644)
    files[f"{NAME}/{LIB_NAME}"] = (lib, 0o755)
    # The package's own idea of its version is the wheel's.
    init = files[f"{NAME}/__init__.py"][0].decode()
    init, n = re.subn(r'(?m)^__version__ = ".*"$', f'__version__ = "{version}"', init)
    if n != 1:
        raise SystemExit(f"{NAME}/__init__.py has no __version__ line to set")
    files[f"{NAME}/__init__.py"] = (init.encode(), 0o644)

    readme = (source / project.get("readme", "README.md")).read_text()
    files[f"{dist_info}/METADATA"] = (metadata(project, version, readme).encode(), 0o644)
    files[f"{dist_info}/WHEEL"] = ((
        "Wheel-Version: 1.0\n"
        "Generator: workerpool-operator hack/packages/build_wheel.py\n"
        "Root-Is-Purelib: false\n"
        f"Tag: {tag}\n"
    ).encode(), 0o644)
    if eps := entry_points(project):
        files[f"{dist_info}/entry_points.txt"] = (eps.encode(), 0o644)
    if license_path is not None:
        files[f"{dist_info}/LICENSE"] = (license_path.read_bytes(), 0o644)
    record = [record_line(p, d) for p, (d, _) in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = (("\n".join(record) + "\n").encode(), 0o644)

    epoch = max(int(os.environ.get("SOURCE_DATE_EPOCH", "315532800")), 315532800)  # zip cannot go before 1980
    stamp = time.gmtime(epoch)[:6]
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"{NAME}-{version}-{tag}.whl"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        # RECORD last, as installers expect; the rest sorted.
        for path in sorted(files, key=lambda p: (p.endswith("/RECORD"), p)):
            data, mode = files[path]
            info = zipfile.ZipInfo(path, stamp)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    wheel.write_bytes(buf.getvalue())
    return wheel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--version", required=True, help="the wheel's version (PEP 440)")
    p.add_argument("--lib", required=True, type=Path, help=f"the {LIB_NAME} to put inside")
    p.add_argument("--out", required=True, type=Path, help="directory for the wheel")
    root = Path(__file__).resolve().parents[2]
    p.add_argument("--source", type=Path, default=root / "bindings" / "python", help="the package's source directory")
    p.add_argument("--license", type=Path, default=root / "LICENSE")
    args = p.parse_args()
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?(\+[a-z0-9]+(\.[a-z0-9]+)*)?",
                        args.version):
        raise SystemExit(f"--version {args.version!r} is not a normalised PEP 440 version")
    print(build(args.source, args.lib, args.version, args.out, args.license if args.license.exists() else None))


if __name__ == "__main__":
    main()
