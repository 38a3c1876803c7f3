"""Build script for tributary-connector.

The protobuf/gRPC modules are never committed: `build_py` generates them from the repository's
proto/ folder (../../proto, or $TRIBUTARY_PROTO_DIR) with grpc_tools.protoc into
tributary_connector/_proto/, and rewrites the generated imports so that they resolve inside that
subpackage (protoc writes `import connector_pb2` / `from plugin import grpc_broker_pb2`, which only
work with the output folder on sys.path, and `from grpc.health.v1 import ...`, which would resolve
to the grpcio package).
"""

import atexit
import os
import re
import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py

HERE = Path(__file__).resolve().parent
PACKAGE = "tributary_connector"
PROTO_PACKAGE = PACKAGE + "._proto"
OUT_DIR = HERE / PACKAGE / "_proto"

# Proto files relative to the proto root; their folders become subpackages of _proto.
PROTOS = [
    "connector.proto",
    "plugin/grpc_broker.proto",
    "plugin/grpc_controller.proto",
    "plugin/grpc_stdio.proto",
    "grpc/health/v1/health.proto",
]


def _proto_packages():
    pkgs = {PROTO_PACKAGE}
    for proto in PROTOS:
        parts = Path(proto).parent.parts
        for i in range(1, len(parts) + 1):
            pkgs.add(".".join((PROTO_PACKAGE,) + parts[:i]))
    return sorted(pkgs)


def _find_proto_root():
    candidates = []
    if os.environ.get("TRIBUTARY_PROTO_DIR"):
        candidates.append(Path(os.environ["TRIBUTARY_PROTO_DIR"]))
    candidates += [HERE.parent.parent / "proto", HERE / "proto"]
    for c in candidates:
        if all((c / p).is_file() for p in PROTOS):
            return c.resolve()
    return None


def _generated_modules():
    """Dotted names (relative to the proto root) of every generated module."""
    mods = set()
    for proto in PROTOS:
        base = proto[: -len(".proto")].replace("/", ".")
        mods.add(base + "_pb2")
        mods.add(base + "_pb2_grpc")
    return mods


def _fix_imports(path, modules):
    text = path.read_text(encoding="utf-8")

    def from_import(m):
        pkg, name, rest = m.group(1), m.group(2), m.group(3)
        if f"{pkg}.{name}" in modules:
            return f"from {PROTO_PACKAGE}.{pkg} import {name}{rest}"
        return m.group(0)

    def plain_import(m):
        name, rest = m.group(1), m.group(2)
        if name in modules:
            return f"from {PROTO_PACKAGE} import {name}{rest}"
        return m.group(0)

    text = re.sub(r"^from ([\w.]+) import (\w+)(.*)$", from_import, text, flags=re.M)
    text = re.sub(r"^import (\w+)( as .*)$", plain_import, text, flags=re.M)
    path.write_text(text, encoding="utf-8")


def generate_protos(log=print):
    proto_root = _find_proto_root()
    if proto_root is None:
        if (OUT_DIR / "connector_pb2.py").is_file():
            log("tributary-connector: proto/ not found, keeping the already generated modules")
            return
        raise SystemExit(
            "tributary-connector: cannot find the proto files (looked in $TRIBUTARY_PROTO_DIR, "
            f"{HERE.parent.parent / 'proto'} and {HERE / 'proto'})")
    try:
        from grpc_tools import protoc
    except ImportError as e:  # pragma: no cover - build environment problem
        raise SystemExit("tributary-connector: grpcio-tools is required to build this package "
                         f"(pip install grpcio-tools): {e}")
    try:
        from importlib.resources import files
        wkt_include = str(files("grpc_tools") / "_proto")
    except Exception:  # pragma: no cover - very old Python
        import pkg_resources
        wkt_include = pkg_resources.resource_filename("grpc_tools", "_proto")

    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir(parents=True)
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{wkt_include}",
        f"--python_out={OUT_DIR}",
        f"--pyi_out={OUT_DIR}",
        f"--grpc_python_out={OUT_DIR}",
    ] + PROTOS
    log(f"tributary-connector: generating protobuf modules from {proto_root}")
    if protoc.main(args) != 0:
        raise SystemExit("tributary-connector: grpc_tools.protoc failed")

    for pkg in _proto_packages():
        init = HERE / Path(*pkg.split(".")) / "__init__.py"
        init.parent.mkdir(parents=True, exist_ok=True)
        if not init.exists():
            init.write_text("# Generated at build time from proto/ - do not edit, do not commit.\n")
    modules = _generated_modules()
    for path in OUT_DIR.rglob("*.py*"):
        if path.suffix in (".py", ".pyi") and path.name != "__init__.py":
            _fix_imports(path, modules)


class build_py(_build_py):
    """Generate the protobuf/gRPC modules before anything looks at the package's files.

    Generation happens in finalize_options because egg_info/dist_info (run before build_py when
    pip prepares metadata) already asks build_py for the package directories.
    """

    _generated = False

    def finalize_options(self):
        super().finalize_options()
        if not build_py._generated:
            generate_protos(log=lambda msg: self.announce(msg, level=2))
            build_py._generated = True


def _runtime_requirements():
    """grpcio >= the generating grpcio-tools, protobuf as that grpcio-tools requires it (its lower
    bound is the generated code's protobuf version), and cryptography for AutoMTLS."""
    reqs = ["cryptography>=42"]
    try:
        from importlib import metadata
        reqs.append(f"grpcio>={metadata.version('grpcio-tools')}")
        protobuf = [r.split(";")[0].strip() for r in metadata.requires("grpcio-tools") or []
                    if re.match(r"protobuf\b", r)]
        reqs += protobuf or ["protobuf>=5.26"]
    except Exception:  # grpcio-tools missing: generate_protos() reports it
        reqs += ["grpcio>=1.60", "protobuf>=5.26"]
    return reqs


def _private_build_base():
    """Build in a fresh temporary folder: nothing is left in the source tree (pip builds in-tree)
    and no stale module from an earlier build can slip into the wheel."""
    path = tempfile.mkdtemp(prefix="tributary-connector-build-")
    atexit.register(shutil.rmtree, path, True)
    return path


setup(
    options={"build": {"build_base": _private_build_base()}},
    install_requires=_runtime_requirements(),
    packages=[PACKAGE] + _proto_packages(),
    package_data={"": ["py.typed", "*.pyi"]},
    cmdclass={"build_py": build_py},
)
