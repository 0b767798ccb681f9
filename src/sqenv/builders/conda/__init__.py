"""The conda builder (py-rattler): `create` (solve, install, `pip:` part, activation), `update`,
and `worker`, the rattler process each step runs in (`python -m sqenv.builders.conda.worker`)."""
