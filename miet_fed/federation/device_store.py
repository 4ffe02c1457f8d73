"""Each device's personal state on disk, so a run with 100,000 registered devices holds in
memory only the cohorts being trained, and any node (on any machine sharing the folder) can
train any device.

A device that trained in round R has `<root>/<bucket>/<device>-r<R>.safetensors` holding what it
keeps between rounds: the unshared part of its network and its strategy's personal slots
(Ditto's personal model). The server remembers each device's newest round (`last_round`,
checkpointed with the server state) and names it in the message, so a node opens exactly one file
per device and never lists a folder. Older versions are deleted only after the round that
replaced them is committed, so a resume always finds the round it needs; a version written by a
round that was cut off is overwritten when that round is redone (sampling is seeded per round).
Plain safetensors: nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from miet_fed.files import atomic_write

State = dict[str, torch.Tensor]
SEP = "::"  # slot::key inside one file


class DeviceStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, device: int, server_round: int) -> Path:
        return self.root / f"{device // 1000:05d}" / f"{device}-r{server_round}.safetensors"

    def load(self, device: int, server_round: int) -> dict[str, State]:
        """The slots device saved in `server_round` (0: it has none yet)."""
        if server_round <= 0:
            return {}
        flat = load_file(str(self.path(device, server_round)))
        slots: dict[str, State] = {}
        for name, tensor in flat.items():
            slot, key = name.split(SEP, 1)
            slots.setdefault(slot, {})[key] = tensor
        return slots

    def save(self, device: int, server_round: int, slots: dict[str, State]) -> bool:
        """Write the device's slots for `server_round` atomically; False when there is nothing
        personal to keep (FedAvg-like strategies), so no file is written."""
        flat = {
            f"{slot}{SEP}{key}": t.detach().contiguous()
            for slot, state in slots.items()
            for key, t in state.items()
        }
        if not flat:
            return False
        final = self.path(device, server_round)
        final.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(final, lambda tmp: save_file(flat, str(tmp)))
        return True

    def drop(self, device: int, server_round: int) -> None:
        if server_round > 0:
            self.path(device, server_round).unlink(missing_ok=True)
