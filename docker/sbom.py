#!/usr/bin/env python3
"""SPDX 2.3 SBOM (JSON) of an image saved by `docker save`: every Debian package of its final
filesystem (var/lib/dpkg/status of the top-most layer that has one) and our own components (the
Tributary binaries, the Go toolchain and the Python SDK wheel where the image has them).

usage: sbom.py IMAGE.tar IMAGE_REF VERSION REVISION CREATED > IMAGE.spdx.json
"""
import io
import json
import re
import sys
import tarfile


def layer_files(image_tar):
    """Yields (layer tarfile) bottom to top."""
    with tarfile.open(image_tar) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        for layer in manifest[0]["Layers"]:
            data = outer.extractfile(layer).read()
            yield tarfile.open(fileobj=io.BytesIO(data))


def final_files(image_tar, wanted):
    """The last version of each path matching `wanted` (a regex), whiteouts applied."""
    found = {}
    for layer in layer_files(image_tar):
        for member in layer.getmembers():
            path = member.name.lstrip("./")
            base = path.rsplit("/", 1)[-1]
            if base.startswith(".wh."):
                found.pop(path.rsplit("/", 1)[0] + "/" + base[4:] if "/" in path else base[4:], None)
                continue
            if member.isfile() and re.fullmatch(wanted, path):
                found[path] = layer.extractfile(member).read()
    return found


def dpkg_packages(status):
    packages = []
    for stanza in status.decode("utf-8", "replace").split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(" "):
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages.append(fields)
    return packages


def spdx_id(text):
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]", "-", text)


def main():
    image_tar, ref, version, revision, created = sys.argv[1:6]
    files = final_files(
        image_tar,
        r"var/lib/dpkg/status|usr/local/go/VERSION|usr/bin/tributary(-controller|-agent|-git-helper)?"
        r"|usr/share/tributary/python/.*\.whl",
    )
    packages = []
    for p in dpkg_packages(files.get("var/lib/dpkg/status", b"")):
        name, ver, arch = p["Package"], p.get("Version", ""), p.get("Architecture", "")
        packages.append({
            "name": name,
            "SPDXID": spdx_id(f"deb-{name}-{arch}"),
            "versionInfo": ver,
            "supplier": "Organization: " + p.get("Maintainer", "Debian").replace("\n", " "),
            "downloadLocation": "NOASSERTION",
            "licenseConcluded": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": f"pkg:deb/debian/{name}@{ver}?arch={arch}&distro=bookworm",
            }],
        })
    ours = []
    for path in sorted(files):
        if path.startswith("usr/bin/tributary"):
            ours.append((path.rsplit("/", 1)[-1], version, f"pkg:generic/tributary/{path.rsplit('/', 1)[-1]}@{version}"))
        elif path == "usr/local/go/VERSION":
            go = files[path].decode().splitlines()[0].removeprefix("go")
            ours.append(("go-toolchain", go, f"pkg:golang/golang.org/toolchain@v0.0.1-go{go}.linux-amd64"))
        elif path.endswith(".whl"):
            wheel = path.rsplit("/", 1)[-1]
            name, ver = wheel.split("-")[:2]
            ours.append((name, ver, f"pkg:pypi/{name.replace('_', '-')}@{ver}"))
    for name, ver, purl in ours:
        packages.append({
            "name": name,
            "SPDXID": spdx_id(f"tributary-{name}"),
            "versionInfo": ver,
            "supplier": "Organization: Tributary" if "golang" not in purl else "Organization: Google LLC",
            "downloadLocation": "NOASSERTION",
            "licenseConcluded": "NOASSERTION",
            "sourceInfo": f"revision {revision}" if "tributary" in purl or "pypi" in purl else "",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": purl}],
        })
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": ref,
        "documentNamespace": f"https://tributary.dev/spdx/{ref.replace(':', '/')}/{revision}",
        "creationInfo": {"created": created, "creators": ["Tool: tributary docker/sbom.py"]},
        "documentDescribes": [p["SPDXID"] for p in packages],
        "packages": packages,
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
