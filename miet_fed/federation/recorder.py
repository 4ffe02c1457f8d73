"""The server's record of a run: one JSON row per device reply (or failure) in the sink's
rows.jsonl, and each round's line and scalars through miet_fed.logging_hooks. Apart from the
ServerApp so the round loop and the bookkeeping can be read (and changed) separately."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from miet_fed.comm.ledger import FIELDS as LEDGER_FIELDS
from miet_fed.federation.client_app import ROWS as REPLY_ROWS
from miet_fed.federation.collect import ROWS
from miet_fed.federation.spec import RunSpec
from miet_fed.logging_hooks import open_hooks

if TYPE_CHECKING:
    from flwr.app import Message


EVAL_KEYS = ("personal_acc", "personal_val_acc")  # a device's evaluation: test, or validation


class Recorder:
    """Appends one JSON row per device reply (or failure); logs each round (the line printed on
    stderr with elapsed time and ETA, log.txt, scalars.jsonl, TensorBoard and added trackers:
    miet_fed.logging_hooks) into the run folder."""

    def __init__(
        self, spec: RunSpec, order: dict[int, int] | None = None, start: float | None = None
    ) -> None:
        """`start`: the server's start (a perf_counter value), where its clock begins: the
        elapsed time of round 1 includes the wait for the client workers."""
        self.order = order or {}  # node id -> client (partition) id, to name failed clients
        self.path = Path(spec.sink) / ROWS
        self.rounds = spec.config.fed.rounds
        self.progress = spec.config.run.progress
        self.failures = 0
        self.countable: dict[int, bool] = {}  # round -> some device trained, all losses finite
        self._round: dict[str, Any] = {}
        self._rows: dict[str, list[dict[str, Any]]] = {}  # this round's device rows, by phase
        self._eval_key = ""  # what the round's evaluation measured (test or validation)
        self._t0 = time.perf_counter() if start is None else start
        self.hooks = open_hooks(
            Path(spec.sink),
            self.rounds,
            first_round=spec.resume_round + 1,
            tensorboard=spec.config.run.tensorboard,
            start=self._t0,
        )
        cfg = spec.config
        self.hooks.text(
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} simulate: {cfg.fed.strategy}, "
            f"{cfg.fed.num_clients} devices on {spec.num_nodes} nodes, {cfg.fed.rounds} rounds, "
            f"seed {cfg.run.seed}"
        )
        if spec.resume_round:
            self.hooks.text(f"resuming after round {spec.resume_round}")

    def restore(self, rows: Path) -> None:
        """Rows of the rounds a killed run completed, as the start of this run's rows."""
        shutil.copyfile(rows, self.path)
        with self.path.open() as f:
            self.failures = sum("error" in json.loads(line) for line in f if line.strip())

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def replies(
        self, phase: str, server_round: int, replies: list[Message], sent: dict[int, list[int]]
    ) -> list[dict[str, Any]]:
        """One row per device (a failed node: one failure row per device it was sent)."""
        accs, rows = [], []
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            if msg.has_error():
                lines = [ln.strip() for ln in str(msg.error.reason).splitlines() if ln.strip()]
                error = (lines[-1] if lines else "unknown error")[:300]
                device_rows = [{"client": d, "error": error} for d in sent.get(node, [-1])]
            else:
                device_rows = json.loads(str(msg.content[REPLY_ROWS]["json"]))
            for device_row in device_rows:
                row = {"round": server_round, "phase": phase, **device_row}
                row["node"] = self.order.get(node, -1)
                if "error" in row:
                    self.failures += 1
                    self.hooks.text(
                        f"round {server_round}: {phase} failed on device {row['client']}: "
                        f"{row['error']}"
                    )
                else:  # evaluation: test, or validation (fed.val_fraction); training's own
                    key = next(k for k in (*EVAL_KEYS, "train_acc", "client") if k in row)
                    accs.append(row.get(key) if key != "client" else None)
                rows.append(row)
        with self.path.open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        accs = [a for a in accs if a is not None]
        self._round[phase] = (float(np.mean(accs)) if accs else float("nan"), len(accs))
        if phase == "evaluate":
            self._eval_key = next((k for k in EVAL_KEYS if any(k in r for r in rows)), "")
        self._rows[phase] = rows
        if phase == "train":
            losses = [r.get("train_loss", float("nan")) for r in rows if "error" not in r]
            self.countable[server_round] = bool(losses) and bool(np.isfinite(losses).all())
        return rows

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def scalars(self, global_acc: float | None) -> dict[str, float]:
        """This round's numbers for the trackers: aggregates over the devices that replied."""
        rows = [r for phase in ("train", "evaluate") for r in self._rows.get(phase, [])]
        ok = [r for r in rows if "error" not in r]

        def values(key: str) -> np.ndarray:
            found = [r[key] for r in ok if r.get(key) is not None]
            return np.asarray(found, dtype=np.float64)

        acc, loss, train_acc = values("personal_acc"), values("train_loss"), values("train_acc")
        nan = float("nan")
        out: dict[str, float] = {
            "personal_acc": float(acc.mean()) if len(acc) else nan,
            "personal_acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else nan,
            "personal_acc_min": float(acc.min()) if len(acc) else nan,
            "personal_acc_max": float(acc.max()) if len(acc) else nan,
            "train_loss": float(loss.mean()) if len(loss) else nan,
            "train_acc": float(train_acc.mean()) if len(train_acc) else nan,
            "clients_trained": len(loss),
            "clients_evaluated": len(acc),
            "failures": len(rows) - len(ok),
        }
        for direction in ("up", "down"):
            fields = [f for f, (d, _) in LEDGER_FIELDS.items() if d == direction]
            out[f"bytes_{direction}"] = int(sum(r.get(f) or 0 for r in ok for f in fields))
        val = values("personal_val_acc")
        if len(val):  # fed.val_fraction: every round's accuracy on validation
            out["personal_val_acc"] = float(val.mean())
        if global_acc is not None:
            out["global_acc"] = float(global_acc)
        return out

    def end_round(self, server_round: int, global_acc: float | None) -> None:
        if server_round == 0:
            return
        _, n_train = self._round.get("train", (float("nan"), 0))
        acc, n_eval = self._round.get("evaluate", (float("nan"), 0))
        which = "personal val acc" if self._eval_key == "personal_val_acc" else "personal acc"
        text = f"{which} {acc:.3f} ({n_eval} clients)"
        if global_acc is not None:
            text += f", global acc {global_acc:.3f}"
        text += f", trained {n_train}, failures {self.failures}"
        line = self.hooks.round(server_round, self.scalars(global_acc), shown=text)
        self._round, self._rows = {}, {}
        if self.progress:
            print(line, file=sys.stderr, flush=True)
        if server_round == self.rounds:
            self.hooks.close()
