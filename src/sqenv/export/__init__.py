"""Environments leaving their prefix: provenance inside every image, SIF export, cotainr's commands.

`provenance` writes the lock and an SBOM into each image (`.sqenv/lock.json`,
`.sqenv/sbom.cdx.json` at the image's root, i.e. `/mnt/sqenv/.sqenv/...`);
`sif` builds a self-contained Apptainer image of an install; `sifreader`
reads the lock and SBOM back out of a SIF or squashfs image.
"""
