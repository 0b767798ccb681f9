"""Run by tests/integration/test_kernel.py as the test user: start a kernelspec with jupyter_client, then
execute, interrupt, restart and shut it down. Prints one JSON object of what happened."""

from __future__ import annotations

import json
import os
import sys
from queue import Empty

from jupyter_client.manager import start_new_kernel


def shell_reply(kc, msg_id: str, timeout: float = 120) -> dict:
    """The shell channel's reply to one request (skipping replies to others)."""
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def execute(kc, code: str, timeout: float = 120) -> dict:
    """Run code; return {"status", "stdout", "ename"} from the kernel's replies."""
    msg_id = kc.execute(code)
    out = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = shell_reply(kc, msg_id, timeout)
    return {"status": reply["content"]["status"], "stdout": "".join(out), "ename": reply["content"].get("ename")}


def main() -> None:
    name = sys.argv[1]
    result: dict = {}
    km, kc = start_new_kernel(kernel_name=name, startup_timeout=120)
    try:
        result["started_pid"] = km.provisioner.pid
        result["six"] = execute(kc, "import os, six; print(six.__file__); print(os.getpid())")
        # interrupt a long computation: SIGINT reaches the kernel through the launcher
        code = "import time\nprint('running', flush=True)\nfor _ in range(6000): time.sleep(0.1)"
        msg_id = kc.execute(code, stop_on_error=False)
        while True:  # wait until the loop runs (`execute_input` comes before the code starts)
            msg = kc.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                break
        reply = None
        for _ in range(6):  # a SIGINT that lands between statements is retried, never lost for good
            km.interrupt_kernel()
            try:
                reply = shell_reply(kc, msg_id, timeout=10)
                break
            except Empty:
                continue
        if reply is None:
            raise SystemExit("the kernel did not stop after six interrupts")
        result["interrupt"] = {"status": reply["content"]["status"], "ename": reply["content"].get("ename")}
        result["after_interrupt"] = execute(kc, "print(6 * 7)")
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=120)
        result["restarted_pid"] = km.provisioner.pid
        result["after_restart"] = execute(kc, "import os, sys; print(sys.prefix); print(os.getpid())")
    finally:
        kc.stop_channels()
        pid = km.provisioner.pid if km.provisioner else None
        km.shutdown_kernel(now=False)
        result["alive_after_shutdown"] = km.is_alive()
        try:
            os.kill(pid, 0)
            result["pid_exists_after_shutdown"] = True
        except (ProcessLookupError, TypeError):
            result["pid_exists_after_shutdown"] = False
    print(json.dumps(result))


if __name__ == "__main__":
    main()
