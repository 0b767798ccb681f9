"""Running the external tools sqenv drives (uv, the rattler worker, mksquashfs, users' scripts).

`run` runs one, `progress` reads its output for the live status line,
`diagnose` says why it failed, `procs` makes sure it dies with sqenv.
"""
