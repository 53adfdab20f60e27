"""Handing a round's ordered VMs to its runners with trust-group affinity.

An appliance serves one trust group for life; changing group costs a boot
(~18 s under TCG, a dozen jobs). If every runner took the head of one queue,
all appliances would serve the first group together and all switch together
when it ends, and again at each later group. Instead a runner keeps the group
it served while that group has VMs in the head staleness bucket, and a runner
without one takes the group fewest runners serve: appliances split the
groups, and a switch happens only when an appliance's own group is done.
Staleness still rules across buckets: no VM is taken ahead of a staler bucket.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence

from guestpool.fleet._model import VM

from ._pool import batchable

#: More trust groups than this at the head of a round: affinity would cost a
#: scan of every group per job; runners then take the head in order, as before.
MAX_GROUPS = 256


def take_batch(queue: deque[VM], size: int, window: int = 64) -> list[VM]:
    """The next VM and up to ``size - 1`` compatible ones from the next ``window``."""
    chunk = [queue.popleft()]
    if size > 1:
        for vm in list(itertools.islice(queue, window)):
            if len(chunk) >= size:
                break
            if batchable([*chunk, vm]):
                chunk.append(vm)
                queue.remove(vm)
    return chunk


class Dispatcher:
    """The round's VMs in order (``bucket_of`` gives a VM's staleness bucket),
    split by trust group."""

    def __init__(self, ordered: Sequence[VM], bucket_of: Callable[[VM], Hashable]) -> None:
        self._bucket_of = bucket_of
        self._position = {id(vm): i for i, vm in enumerate(ordered)}
        self._order = deque(ordered)  # the head, with VMs already taken dropped lazily
        self._taken: set[int] = set()
        self._by_group: dict[str, deque[VM]] = {}
        for vm in ordered:
            self._by_group.setdefault(vm.trust_group, deque()).append(vm)
        #: VMs not yet handed out, by trust group (the pool's hint for which
        #: appliance to retire when one must switch)
        self.remaining: Counter[str] = Counter({g: len(q) for g, q in self._by_group.items()})
        self._serving: Counter[str] = Counter()

    def __len__(self) -> int:
        return sum(self.remaining.values())

    def _head(self) -> VM:
        while id(self._order[0]) in self._taken:
            self._taken.discard(id(self._order.popleft()))
        return self._order[0]

    def pick(self, mine: str | None) -> str:
        """The trust group a runner that last served ``mine`` should serve next."""
        head = self._head()
        bucket = self._bucket_of(head)
        own = self._by_group.get(mine) if mine is not None else None
        if own and self._bucket_of(own[0]) == bucket:
            return own[0].trust_group
        if len(self._by_group) > MAX_GROUPS:
            return head.trust_group
        fronts = [q[0] for q in self._by_group.values()]
        candidates = [vm for vm in fronts if self._bucket_of(vm) == bucket]
        others = self._serving.copy()
        if mine is not None:
            others[mine] -= 1  # this runner leaves its group
        best = min(candidates, key=lambda vm: (others[vm.trust_group], self._position[id(vm)]))
        return best.trust_group

    def take(self, group: str, size: int, mine: str | None, window: int = 64) -> list[VM]:
        """The next VM of ``group`` and up to ``size - 1`` compatible ones of the same
        group from its next ``window``; the runner now serves ``group``."""
        queue = self._by_group[group]
        chunk = take_batch(queue, size, window)
        if not queue:
            del self._by_group[group]  # only groups with VMs left are kept
        self.remaining[group] -= len(chunk)
        self._taken.update(id(vm) for vm in chunk)
        if mine is not None:
            self._serving[mine] -= 1
        self._serving[group] += 1
        return chunk

    def leave(self, mine: str | None) -> None:
        """A runner stops: it no longer serves its group."""
        if mine is not None:
            self._serving[mine] -= 1
