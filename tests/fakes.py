"""In-memory stand-ins shared by tests (no network, no DynamoDB)."""

from __future__ import annotations

import threading

from shared.adapters.qbo.pacing import Booking, log_admit, log_end


class MemoryPaceStore:
    """The same GCRA / leased-slot / batch-log rules as DynamoPaceStore, in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tat: dict[tuple[str, str], float] = {}
        self.slots: dict[tuple[str, int], tuple[str, float]] = {}
        self.log: dict[str, list[float]] = {}

    def take(self, realm_id: str, bucket: str, now: float, interval: float, tolerance: float) -> Booking:
        with self._lock:
            tat = max(self.tat.get((realm_id, bucket), 0.0), now)
            if tat - now > tolerance + interval:
                return Booking(False, tat - tolerance - interval - now)
            self.tat[(realm_id, bucket)] = tat + interval
            return Booking(True, max(0.0, tat - tolerance - now))

    def claim_slot(self, realm_id: str, slots: int, owner: str, now: float, lease_s: float) -> int | None:
        with self._lock:
            for n in range(slots):
                held = self.slots.get((realm_id, n))
                if held is None or held[1] < now:
                    self.slots[(realm_id, n)] = (owner, now + lease_s)
                    return n
            return None

    def release_slot(self, realm_id: str, slot: int, owner: str) -> None:
        with self._lock:
            if self.slots.get((realm_id, slot), ("", 0))[0] == owner:
                del self.slots[(realm_id, slot)]

    def admit(self, realm_id: str, now: float, limit: int, window_s: float, lease_s: float) -> Booking:
        with self._lock:
            entered, wait = log_admit(self.log.get(realm_id, []), now, limit, window_s, lease_s)
            if entered is None:
                return Booking(False, wait)
            self.log[realm_id] = entered
            return Booking(True, 0.0)

    def done(self, realm_id: str, started: float, ended: float) -> None:
        with self._lock:
            self.log[realm_id] = log_end(self.log.get(realm_id, []), started, ended)
