"""Latency model of the simulated parallel file system's metadata server (MDS), and its sources.

Why a model: this VM has two cores and no Lustre, so the simulator serves the real metadata
operations of real programs (counted exactly) but *delays* each reply as a Lustre MDS would.
The same numbers then extrapolate the exact per-job op counts to 1,000 nodes (``predict``).

What an MDS request costs (one client thread waiting for one reply)::

    reply time = RTT + queueing wait + service time

with ``threads`` requests in service at once (first come, first served, like the ptlrpc
request queue feeding the MDS service threads). Parameters, and where they come from:

``service_s = 400 µs`` and ``threads = 200``
    Dell's Lustre 2.7 solution brief (HPC Lustre Storage with Intel Omni-Path, mdtest 1.9.3,
    "File Metadata Operations"): file *stat* runs at "over 2K OPS" with one client thread and
    "more than 500K OPS with 240 concurrent threads". One thread at 2,000 op/s is 500 µs per
    round trip = RTT + service; 500,000 op/s across many threads is a server capacity of
    ``threads / service_s`` = 200 / 400 µs = 500,000 op/s. (File *create* in the same brief
    runs 1.1K → 27K OPS: opens/creates are dearer than stats; we charge every op type the
    stat price, which flatters the plain venv, not sqenv.)
``rtt_s = 100 µs``
    LNet "ping" (lnet_selftest, a short request and reply — "useful to simulate Lustre
    metadata traffic", Lustre wiki "LNET Selftest") on an HPC fabric plus the client's RPC
    stack: of the 500 µs a single-thread stat takes, we assign 100 µs to the network and
    client, the rest to the server. The split matters little: both are per-op constants.
``threads``
    The Lustre wiki ("Lustre Service Thread Tuning"; "Lustre Tuning") describes service
    thread pools of tens to a few hundred threads per service (OSS: at most 512); a
    capacity of 500K stat/s is what the brief above measured with its defaults.

What the client caches (Lustre's DLM locks let a client keep, until another client changes
them, the dentries, attributes and directory pages it has seen; nothing here changes, so
the cache lasts the whole run — the FUSE client uses kernel entry/attribute timeouts of
``CACHE_S``):

- ``lookup``/``getattr``/``readlink``: one request per node per name (then cached),
  including negative lookups (Lustre caches negative dentries under the parent's lock).
- ``readdir``: one request per node per directory (Lustre caches directory pages).
- ``open``/``close`` of files and directories: one request *per call, per process*. A Lustre
  open is an intent RPC to the MDS and a close is an ``MDS_CLOSE`` RPC (the Lustre client
  sends a close RPC for every open handle; see the staging/lustre "cleanup open handle"
  commit). Lustre ≥ 2.15 can cache open locks after repeated opens of one file
  (``opencache_threshold_count``); we model the classic default without it.
- data (``read``): straight from the backing directory, no MDS involved (in Lustre the OSS
  serves data once the file is open: "the MDS does not participate in file IO once the file
  is opened, until the file is closed", Lustre wiki "Lustre Clients Overview"). Pages stay
  in the node's page cache (``keep_cache``).

Published anchors the model is meant to reproduce in shape (issue 12): NERSC notes that
``import scipy`` "opens or attempts to open about 4000 files" per process, and that Python
applications "at the scale of a few hundred or a thousand tasks may take an unacceptable
amount of time simply starting up" (NERSC docs, "Python: Scaling Up"); python-mpi-bcast
measured ``import scipy`` at 24,576 ranks taking 27 s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: kernel entry/attribute cache lifetime the client asks for (the run never changes the tree)
CACHE_S = 1_000_000.0

#: operations that go to the MDS (all counted; each costs one modelled round trip)
MDS_OPS = ("lookup", "getattr", "readlink", "open", "close", "opendir", "readdir", "closedir", "statfs")


@dataclass(frozen=True)
class Params:
    rtt_s: float = 100e-6
    service_s: float = 400e-6
    threads: int = 200

    @property
    def capacity(self) -> float:
        """Metadata operations per second one MDS serves when saturated."""
        return self.threads / self.service_s

    def as_dict(self) -> dict:
        return asdict(self)


def predict(ops_per_job: float, ranks: int, serial_ops_per_rank: float, params: Params) -> dict:
    """Metadata time of one job start from exact op counts and the latency model.

    ``ops_per_job``: all MDS requests of the job; ``serial_ops_per_rank``: the requests one rank
    waits for one after another (its import path). The job's metadata phase lasts at least
    the longer of (a) one rank's chain of round trips with an idle server and (b) the time a
    saturated server needs for all requests (``ops / capacity``). Returned in seconds.
    """
    chain = serial_ops_per_rank * (params.rtt_s + params.service_s)
    drain = ops_per_job / params.capacity
    return {
        "ops": ops_per_job,
        "ranks": ranks,
        "chain_s": chain,
        "drain_s": drain,
        "metadata_s": max(chain, drain),
    }
