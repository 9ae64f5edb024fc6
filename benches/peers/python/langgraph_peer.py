"""W1, W2 and W3 of muster's docs/workloads.md on LangGraph, the way its docs show
multi-agent work: a StateGraph whose nodes are the agents, compiled and invoked, the
state a TypedDict of the payload's five fields that each node updates.

- W1: nodes A -> B -> C between START and END; one `invoke` per task. Microseconds per
  handoff = task time / 3.
- W2: `--agents` nodes echo_0..echo_{agents-1}; a batch of `--in-flight` tasks is one
  `ainvoke` whose router fans each task out with `Send` to node echo_{i % agents}
  (LangGraph's map-reduce), the echoes reduced into a list. No checkpointer.
- W3: one node; each `invoke` timed alone.

Run by `muster bench --peers`; by hand:
    python langgraph_peer.py --workload W1 --tasks 10000 --warmup 200
"""

import asyncio
import operator
import time
from importlib.metadata import version
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

import peer_common as common

PEER = "langgraph"


class Payload(TypedDict):
    """The 5-field payload as the graph's state."""

    task_id: int
    hops: int
    last: str
    data: str
    score: float


def hop_node(name):
    """A node: hops + 1, last = its name (LangGraph merges the update into the state)."""

    def node(state: Payload):
        return {"hops": state["hops"] + 1, "last": name}

    return node


def w1(args):
    g = StateGraph(Payload)
    for name in ("A", "B", "C"):
        g.add_node(name, hop_node(name))
    g.add_edge(START, "A")
    g.add_edge("A", "B")
    g.add_edge("B", "C")
    g.add_edge("C", END)
    graph = g.compile()
    for i in range(args.warmup):
        graph.invoke(common.payload(i))
    t = time.perf_counter()
    for i in range(args.tasks):
        out = graph.invoke(common.payload(args.warmup + i))
        if out["hops"] != 3 or out["last"] != "C":
            common.fail(f"W1 task {i}: {out}")
    d = time.perf_counter() - t
    return {"us_per_handoff": d * 1e6 / args.tasks / 3, "tasks_per_s": args.tasks / d}


class Batch(TypedDict):
    """W2's state: the tasks of one batch and the echoes reduced into a list."""

    tasks: list
    done: Annotated[list, operator.add]


def echo_node(name):
    async def node(task: Payload):
        return {"done": [{**task, "hops": task["hops"] + 1, "last": name}]}

    return node


def w2(args):
    t = time.perf_counter()
    g = StateGraph(Batch)
    names = [f"echo_{k}" for k in range(args.agents)]
    for name in names:
        g.add_node(name, echo_node(name))
        g.add_edge(name, END)

    def route(state: Batch):
        return [Send(names[p["task_id"] % args.agents], p) for p in state["tasks"]]

    g.add_conditional_edges(START, route, names)
    graph = g.compile()
    register_ms = (time.perf_counter() - t) * 1e3

    async def run():
        i = 0
        while i < args.tasks:
            end = min(i + args.in_flight, args.tasks)
            out = await graph.ainvoke({"tasks": [common.payload(k) for k in range(i, end)],
                                       "done": []})
            if len(out["done"]) != end - i or any(d["hops"] != 1 for d in out["done"]):
                common.fail(f"W2 batch at {i}: {len(out['done'])} echoes for {end - i} tasks")
            i = end

    t = time.perf_counter()
    asyncio.run(run())
    d = time.perf_counter() - t
    return {"tasks_per_s": args.tasks / d, "register_agents_ms": register_ms,
            "peak_rss_mb": common.peak_rss_mb()}


def w3(args):
    g = StateGraph(Payload)
    g.add_node("echo", hop_node("echo"))
    g.add_edge(START, "echo")
    g.add_edge("echo", END)
    graph = g.compile()
    for i in range(args.warmup):
        graph.invoke(common.payload(i))
    v = []
    for i in range(args.tasks):
        t = time.perf_counter_ns()
        out = graph.invoke(common.payload(i))
        v.append((time.perf_counter_ns() - t) / 1e3)
        if out["hops"] != 1:
            common.fail(f"W3 task {i}: {out}")
    v.sort()
    return {"p50_us": common.percentile(v, 50), "p90_us": common.percentile(v, 90),
            "p99_us": common.percentile(v, 99)}


def main():
    args = common.parse_args(__doc__)
    figures = {"W1": w1, "W2": w2, "W3": w3}[args.workload](args)
    common.emit(PEER, version("langgraph"), args.workload, args.tasks, figures)


if __name__ == "__main__":
    main()
