"""The lock and the SBOM that go into every image sqenv makes, and into every SIF it exports.

Inside the image (so at `/mnt/sqenv/.sqenv/...` at run time, and in any copy):

    .sqenv/lock.json       every package: name, version, manager, build, channel or index,
                           URL, sha256 (conda: the solved files; pip: the wheels, see `artifacts`)
    .sqenv/sbom.cdx.json   the same as a CycloneDX 1.5 JSON SBOM (cyclonedx-python-lib)

Both are byte-stable: sorted, no build time, no random IDs (the SBOM's serial
number is derived from the lock), so two builds of one lock stay identical.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqenv import __version__

LOCK_PATH = ".sqenv/lock.json"
SBOM_PATH = ".sqenv/sbom.cdx.json"
FORMAT = 1
_FIELDS = ("name", "version", "manager", "build", "channel", "index", "url", "sha256")


def lock_document(
    *, kind: str, mount_path: str, python: dict | None, packages: list[dict], conda_lock: dict | None, index: dict
) -> dict:
    """The lock as written into images: stable keys, packages sorted by manager then name."""
    entries = []
    for pkg in packages:
        entry = {k: pkg.get(k) for k in _FIELDS if pkg.get(k) is not None}
        if entry.get("manager", "pip") == "pip":
            entry.setdefault("manager", "pip")
            entry.setdefault("sha256", None)  # said explicitly: not found on the index
        entries.append(entry)
    entries.sort(key=lambda e: (e.get("manager", ""), e["name"].lower(), e.get("version", "")))
    doc: dict = {"sqenv_lock": FORMAT, "kind": kind, "mount_path": mount_path}
    if python:
        doc["python"] = {k: python[k] for k in ("version", "implementation", "executable") if python.get(k)}
    if conda_lock:
        doc["platform"] = conda_lock.get("platform")
        doc["channels"] = list(conda_lock.get("channels", []))
    if index:
        doc["index"] = index
    doc["packages"] = entries
    missing = [e["name"] for e in entries if "sha256" in e and e["sha256"] is None]
    if missing:
        doc["sha256_missing"] = missing
    return doc


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=1, sort_keys=False) + "\n"


def _purl(pkg: dict):
    from packageurl import PackageURL

    if pkg.get("manager") == "conda":
        qualifiers = {k: v for k, v in (("build", pkg.get("build")), ("channel", pkg.get("channel"))) if v}
        return PackageURL(type="conda", name=pkg["name"], version=pkg["version"], qualifiers=qualifiers)
    return PackageURL(type="pypi", name=pkg["name"].lower().replace("_", "-"), version=pkg["version"])


def sbom(doc: dict, name: str, when: int) -> str:
    """CycloneDX 1.5 JSON of the lock `doc` for an environment called `name`; `when` is its time."""
    from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, XsUri
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot5

    digest = hashlib.sha256(dumps(doc).encode()).hexdigest()
    components = []
    for pkg in doc["packages"]:
        purl = _purl(pkg)
        url = pkg.get("url")
        refs = [ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(url))] if url else []
        hashes = [HashType(alg=HashAlgorithm.SHA_256, content=pkg["sha256"])] if pkg.get("sha256") else []
        components.append(Component(name=pkg["name"], version=pkg["version"], type=ComponentType.LIBRARY, purl=purl,
                                    bom_ref=purl.to_string(), hashes=hashes, external_references=refs))  # fmt: skip
    root = Component(name=name, version=digest[:16], type=ComponentType.APPLICATION, bom_ref=f"sqenv-env-{digest[:16]}",
                     description=f"{doc['kind']} environment packed by sqenv {__version__}")  # fmt: skip
    bom = Bom(
        components=components,
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"sqenv:lock:{digest}"),
        metadata=BomMetaData(component=root, timestamp=datetime.fromtimestamp(when, UTC)),
    )
    for comp in components:
        bom.register_dependency(root, [comp])
    return JsonV1Dot5(bom).output_as_string(indent=1) + "\n"


def write_into(staging: Path, doc: dict, name: str, when: int) -> None:
    """Write `.sqenv/lock.json` and `.sqenv/sbom.cdx.json` into an image's tree (world-readable)."""
    (staging / ".sqenv").mkdir(exist_ok=True)
    (staging / ".sqenv").chmod(0o755)
    for rel, text in ((LOCK_PATH, dumps(doc)), (SBOM_PATH, sbom(doc, name, when))):
        path = staging / rel
        path.write_text(text)
        path.chmod(0o644)


def for_build(spec, result, staging: Path, mount_path: str) -> dict:
    """The lock of a finished build (`sqenv.builders.BuildResult`), pip wheels looked up on the index."""
    from sqenv.export.artifacts import lookup

    packages = [{k: v for k, v in vars(p).items() if v is not None} for p in result.packages]
    index = spec.index.record() if getattr(spec, "index", None) else {}
    pip = [(p["name"], p["version"]) for p in packages if p.get("manager", "pip") == "pip"]
    if pip and spec.kind in ("pip", "conda"):
        site = next(iter(sorted(staging.glob("lib/python3*/site-packages"))), None)
        found = lookup(pip, site, index)
        from packaging.utils import canonicalize_name

        for p in packages:
            hit = found.get(canonicalize_name(p["name"])) if p.get("manager", "pip") == "pip" else None
            if hit:
                p.update(hit)
    conda_lock = result.extra.get("lock") if isinstance(result.extra, dict) else None
    doc = lock_document(kind=spec.kind, mount_path=mount_path, python=result.python, packages=packages,
                        conda_lock=conda_lock, index=index)  # fmt: skip
    if isinstance(result.extra, dict) and result.extra.get("target_cpu"):  # pip: `--target-cpu`
        doc["target_cpu"] = result.extra["target_cpu"]
    return doc
