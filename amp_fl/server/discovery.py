"""Node discovery: wait for the SuperNodes, then learn each one's device id and device profile.

Uses the typed query messages of :mod:`amp_fl.protocol` (:class:`~amp_fl.protocol.ProfileQuery`,
:class:`~amp_fl.protocol.DeviceProfileReply`).
"""

from __future__ import annotations

import time

from flwr.serverapp import Grid

from amp_fl import protocol as P
from amp_fl.errors import InvalidReplyError
from amp_fl.wireless.devices import DeviceProfile


def wait_for_nodes(grid: Grid, count: int, timeout_s: float, poll_s: float = 0.2) -> list[int]:
    """Block until ``count`` nodes are online (simulation brings them up gradually); their node ids.

    Raises ``TimeoutError`` when fewer than ``count`` nodes are online after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while len(nodes := list(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(nodes)} of {count} nodes came online within {timeout_s:.0f} s; "
                "the number of SuperNodes (num-supernodes) must equal wireless.num_devices"
            )
        time.sleep(poll_s)
    return nodes


def discover_devices(
    grid: Grid, query: P.ProfileQuery, nodes: list[int], num_devices: int, timeout_s: float
) -> tuple[dict[int, int], list[DeviceProfile]]:
    """Ask every node for its partition id and device profile.

    Returns the map device id -> node id and the profiles in device order. Raises
    :class:`~amp_fl.errors.InvalidReplyError` (a ``ValueError``) for a failed or malformed
    reply, a duplicate or out-of-range partition id, or a device no node reported.
    """
    replies = list(grid.send_and_receive([query.to_message(n) for n in nodes], timeout=timeout_s))
    device_nodes: dict[int, int] = {}
    profiles: dict[int, DeviceProfile] = {}
    for message in replies:
        node = message.metadata.src_node_id
        if message.has_error():
            raise InvalidReplyError(f"node {node} failed the profile query: {message.error.reason}")
        try:
            reply = P.DeviceProfileReply.from_content(message.content)
        except InvalidReplyError as exc:
            raise InvalidReplyError(f"node {node}: {exc}") from exc
        device = reply.partition_id
        if device in device_nodes or not 0 <= device < num_devices:
            raise InvalidReplyError(
                f"node {node} reports {P.PARTITION_ID} {device}: partition ids must be unique and in [0, {num_devices})"
            )
        device_nodes[device] = node
        profiles[device] = reply.to_profile()
    missing = sorted(set(range(num_devices)) - set(device_nodes))
    if missing:
        raise InvalidReplyError(
            f"no node reported {P.PARTITION_ID}(s) {missing[:10]}; got {len(device_nodes)} of {num_devices}"
        )
    return device_nodes, [profiles[k] for k in range(num_devices)]
