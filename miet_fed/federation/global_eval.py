"""The server's evaluation of the global model (strategies that have one), per task.

Without validation the global model is tested every round on the held-out test set
(`global_acc`). With `fed.val_fraction` it is measured every round on the devices' pooled
validation images (`global_val_acc`) and tested once, after the last round. With tasks, each
task's test (or validation) images are read by its own network, body and its task's head
(`global_acc[<task>]`), and `global_acc` is the mean over tasks (each counted once).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from miet_fed.edge.train import evaluate
from miet_fed.federation.sharing import record_to_state
from miet_fed.federation.tasks import task_of_images, task_view

Sets = list[tuple[str, dict[str, torch.Tensor], torch.Tensor]]  # (task, payloads, labels)


class GlobalEval:
    def __init__(self, spec: Any, nets: list[Any], source: Any, enabled: bool) -> None:
        self.spec, self.nets = spec, nets
        self.sets: dict[str, Sets] = {}
        if not enabled:
            return
        if len(spec.global_test):
            self.sets["test"] = self._by_task(source, spec.global_test)
        if spec.clients_val:
            self.sets["val"] = self._by_task(source, np.unique(np.concatenate(spec.clients_val)))

    def _by_task(self, source: Any, ids: np.ndarray) -> Sets:
        x_all = source.features(ids)
        which = task_of_images(self.spec.tasks, ids)
        out = []
        for t in range(len(self.nets)):
            pos = np.flatnonzero(which == t)
            index = torch.from_numpy(pos)
            x = x_all if len(self.nets) == 1 else {k: v[index] for k, v in x_all.items()}
            y = torch.from_numpy(self.spec.labels[ids[pos]])
            out.append((self.spec.tasks[t].name if self.spec.tasks else "", x, y))
        return out

    def __call__(self, server_round: int, arrays: Any) -> dict[str, float]:
        """This round's global metrics (none for a strategy without a global model)."""
        if not self.sets:
            return {}
        last = server_round == self.spec.config.fed.rounds
        splits = [s for s in self.sets if s == "val" or last or "val" not in self.sets]
        state = record_to_state(arrays)
        row: dict[str, float] = {}
        for split in splits:
            prefix = "global_val" if split == "val" else "global"
            for t, (name, x, y) in enumerate(self.sets[split]):
                self.nets[t].load_state_dict(task_view(state, name))
                loss, acc = evaluate(self.nets[t], x, y)
                if name:
                    row |= {f"{prefix}_loss[{name}]": loss, f"{prefix}_acc[{name}]": acc}
                else:
                    row |= {f"{prefix}_loss": loss, f"{prefix}_acc": acc}
            if self.spec.tasks:  # the tasks' mean, each task counted once
                names = [n for n, _, _ in self.sets[split]]
                for m in ("acc", "loss"):
                    row[f"{prefix}_{m}"] = float(
                        np.mean([row[f"{prefix}_{m}[{n}]"] for n in names])
                    )
        return row
