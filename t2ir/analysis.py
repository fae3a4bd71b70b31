"""Whole-graph analyses on a networkx view of the IR (the IR itself stays the storage)."""

from __future__ import annotations

import networkx as nx

from t2ir.ir import Graph


def to_networkx(g: Graph) -> nx.DiGraph:
    """Nodes are IR nodes (by position), edges follow values from producer to reader."""
    dag = nx.DiGraph()
    index = {}
    for i, node in enumerate(g.nodes):
        index[id(node)] = i
        dag.add_node(i, op=node.op)
        for v in node.inputs:
            if v.producer is not None and id(v.producer) in index:
                dag.add_edge(index[id(v.producer)], i, value=v.name)
    return dag


def critical_path(g: Graph) -> list[str]:
    """Ops on the longest dependency chain: the sequential depth tract cannot parallelise."""
    dag = to_networkx(g)
    return [dag.nodes[i]["op"] for i in nx.dag_longest_path(dag)]
