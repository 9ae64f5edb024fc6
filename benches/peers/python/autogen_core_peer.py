"""W1, W2 and W3 of muster's docs/workloads.md on AutoGen core, the way its docs show
agents talking: RoutedAgent subclasses registered on a SingleThreadedAgentRuntime, each
request a `send_message` to an AgentId answered by a `@message_handler`.

- W1: agents A, B, C; the caller sends to A, A sends its hop to B, B to C; C's reply
  travels back. Microseconds per handoff = task time / 3.
- W2: one agent type "echo" with `--agents` keys (AutoGen's agent instances), task i sent
  to key i % agents, `--in-flight` requests awaited together at a time.
- W3: one agent; each send_message timed alone.

Run by `muster bench --peers`; by hand:
    python autogen_core_peer.py --workload W1 --tasks 10000 --warmup 200
"""

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from importlib.metadata import version

from autogen_core import (
    AgentId,
    MessageContext,
    RoutedAgent,
    SingleThreadedAgentRuntime,
    message_handler,
)

import peer_common as common

PEER = "autogen-core"


@dataclass
class Payload:
    """The 5-field payload."""

    task_id: int
    hops: int
    last: str
    data: str
    score: float


class Hop(RoutedAgent):
    """Copies the payload with hops + 1 and last = its name, then hands it to the next
    agent (if any) and answers with what comes back."""

    def __init__(self, name, next_type):
        super().__init__(f"hop {name}")
        self._name = name
        self._next = next_type

    @message_handler
    async def on_payload(self, message: Payload, ctx: MessageContext) -> Payload:
        out = dataclasses.replace(message, hops=message.hops + 1, last=self._name)
        if self._next is None:
            return out
        return await self.send_message(out, AgentId(self._next, "default"))


def new_payload(i):
    return Payload(**common.payload(i))


async def w1(args):
    rt = SingleThreadedAgentRuntime()
    for name, nxt in (("A", "B"), ("B", "C"), ("C", None)):
        await Hop.register(rt, name, lambda name=name, nxt=nxt: Hop(name, nxt))
    rt.start()
    a = AgentId("A", "default")
    for i in range(args.warmup):
        await rt.send_message(new_payload(i), a)
    t = time.perf_counter()
    for i in range(args.tasks):
        out = await rt.send_message(new_payload(args.warmup + i), a)
        if out.hops != 3:
            common.fail(f"W1 task {i}: {out.hops} hops, expected 3")
    d = time.perf_counter() - t
    await rt.stop()
    return {"us_per_handoff": d * 1e6 / args.tasks / 3, "tasks_per_s": args.tasks / d}


async def w2(args):
    rt = SingleThreadedAgentRuntime()
    t = time.perf_counter()
    await Hop.register(rt, "echo", lambda: Hop("echo", None))
    ids = [AgentId("echo", str(k)) for k in range(args.agents)]
    register_ms = (time.perf_counter() - t) * 1e3
    rt.start()
    t = time.perf_counter()
    i = 0
    while i < args.tasks:
        end = min(i + args.in_flight, args.tasks)
        outs = await asyncio.gather(
            *(rt.send_message(new_payload(k), ids[k % args.agents]) for k in range(i, end)))
        if any(o.hops != 1 for o in outs):
            common.fail("W2: a reply without its hop")
        i = end
    d = time.perf_counter() - t
    await rt.stop()
    return {"tasks_per_s": args.tasks / d, "register_agents_ms": register_ms,
            "peak_rss_mb": common.peak_rss_mb()}


async def w3(args):
    rt = SingleThreadedAgentRuntime()
    await Hop.register(rt, "echo", lambda: Hop("echo", None))
    rt.start()
    echo = AgentId("echo", "default")
    for i in range(args.warmup):
        await rt.send_message(new_payload(i), echo)
    v = []
    for i in range(args.tasks):
        t = time.perf_counter_ns()
        out = await rt.send_message(new_payload(i), echo)
        v.append((time.perf_counter_ns() - t) / 1e3)
        if out.hops != 1:
            common.fail(f"W3 task {i}: {out.hops} hops, expected 1")
    await rt.stop()
    v.sort()
    return {"p50_us": common.percentile(v, 50), "p90_us": common.percentile(v, 90),
            "p99_us": common.percentile(v, 99)}


def main():
    args = common.parse_args(__doc__)
    run = {"W1": w1, "W2": w2, "W3": w3}[args.workload]
    figures = asyncio.run(run(args))
    common.emit(PEER, version("autogen-core"), args.workload, args.tasks, figures)


if __name__ == "__main__":
    main()
