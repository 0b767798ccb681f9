"""Environments leaving their prefix: package lists, provenance inside every image, SIF export.

`formats` writes an install's exact packages (`sqenv export --format`);
`provenance` writes the lock and an SBOM into each image (`.sqenv/lock.json`,
`.sqenv/sbom.cdx.json` at the image's root, i.e. `/mnt/sqenv/.sqenv/...`);
`sif` builds a self-contained Apptainer image of an install; `sifreader`
reads the lock and SBOM back out of a SIF or squashfs image.
"""
