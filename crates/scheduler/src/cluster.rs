//! The scheduler's working copy of the cluster for one pass: node views, per-zone counts of
//! app replicas, and where the last sampled search stopped.

use crate::core::{explain, fits, score, spread_key, NodeView, Resources, Strategy, Unschedulable};
use kumo_api::keys::LABEL_ZONE;
use kumo_api::Pod;
use std::collections::HashMap;

/// Below this many nodes every node is scored (kube-scheduler's `minFeasibleNodesToFind`).
const MIN_FEASIBLE_NODES: usize = 100;

/// How many feasible nodes a sampled search looks for before it stops: kube-scheduler's
/// adaptive `percentageOfNodesToScore`, 50% minus 1% per 125 nodes, never below 5% nor below
/// [`MIN_FEASIBLE_NODES`] (5,000 nodes: 500). Small clusters are searched whole.
pub fn feasible_nodes_to_find(nodes: usize) -> usize {
    if nodes < MIN_FEASIBLE_NODES {
        return nodes;
    }
    let percent = 50usize.saturating_sub(nodes / 125).max(5);
    (nodes * percent / 100).max(MIN_FEASIBLE_NODES)
}

/// Node views plus what placement needs to answer fast: each node's zone and, per spread group,
/// the replicas in each zone, kept in step by [`Cluster::assume`].
#[derive(Debug, Clone)]
pub struct Cluster {
    nodes: Vec<NodeView>,
    /// Index into `zone_counts`' vectors of each node's zone; `None` without a zone label.
    zone_of: Vec<Option<usize>>,
    zones: usize,
    /// Spread group → replicas in each zone.
    zone_counts: HashMap<String, Vec<u32>>,
    /// Each node's position in name order: ties between equal scores go to the first by name,
    /// and comparing positions is much cheaper than comparing names for every tie.
    name_rank: Vec<u32>,
    sample: bool,
    /// Where the next sampled search starts: after the node where the last one stopped, so
    /// successive pods look at different nodes and the work spreads over the cluster.
    next: usize,
}

impl Cluster {
    /// A cluster whose searches consider every node.
    pub fn new(nodes: Vec<NodeView>) -> Self {
        let mut zone_ids: HashMap<String, usize> = HashMap::new();
        let zone_of: Vec<Option<usize>> = nodes
            .iter()
            .map(|n| {
                let zone = n.labels.get(LABEL_ZONE)?;
                let next = zone_ids.len();
                Some(*zone_ids.entry(zone.clone()).or_insert(next))
            })
            .collect();
        let zones = zone_ids.len();
        let mut zone_counts: HashMap<String, Vec<u32>> = HashMap::new();
        for (node, zone) in nodes.iter().zip(&zone_of) {
            if let Some(z) = *zone {
                for (key, n) in &node.spread {
                    zone_counts
                        .entry(key.clone())
                        .or_insert_with(|| vec![0; zones])[z] += n;
                }
            }
        }
        let mut by_name: Vec<usize> = (0..nodes.len()).collect();
        by_name.sort_by(|&a, &b| nodes[a].name.cmp(&nodes[b].name));
        let mut name_rank = vec![0u32; nodes.len()];
        for (rank, i) in by_name.into_iter().enumerate() {
            name_rank[i] = rank as u32;
        }
        Cluster {
            nodes,
            zone_of,
            zones,
            zone_counts,
            name_rank,
            sample: false,
            next: 0,
        }
    }

    /// Searches stop after [`feasible_nodes_to_find`] feasible nodes (the scheduling loop).
    pub fn sampled(mut self) -> Self {
        self.sample = true;
        self
    }

    pub fn nodes(&self) -> &[NodeView] {
        &self.nodes
    }

    /// Counts `pod` on node `i` for the rest of the pass: its requests and its spread group.
    pub fn assume(&mut self, i: usize, pod: &Pod) {
        let node = &mut self.nodes[i];
        node.requested.add(&Resources::of_pod(pod));
        if let Some(key) = spread_key(pod) {
            if let Some(z) = self.zone_of[i] {
                self.zone_counts
                    .entry(key.clone())
                    .or_insert_with(|| vec![0; self.zones])[z] += 1;
            }
            *node.spread.entry(key).or_default() += 1;
        }
    }

    /// Chooses a node for `pod`: the best by (fewest replicas of its spread group in the zone,
    /// then on the node, then `strategy`'s score), ties to the first by name, among the feasible
    /// nodes a search finds. When none fits, the reasons are counted over every node.
    pub fn place(&mut self, pod: &Pod, strategy: Strategy) -> Result<usize, Unschedulable> {
        let n = self.nodes.len();
        let want = Resources::of_pod(pod);
        let key = spread_key(pod);
        let in_zones = key.as_deref().and_then(|k| self.zone_counts.get(k));
        let (limit, start) = if self.sample {
            (feasible_nodes_to_find(n), self.next % n.max(1))
        } else {
            (n, 0)
        };
        let mut found = 0;
        let mut best: Option<((i64, i64, i128), usize)> = None;
        for step in 0..n {
            let i = if start + step >= n {
                start + step - n
            } else {
                start + step
            };
            let node = &self.nodes[i];
            if !fits(pod, &want, node) {
                continue;
            }
            let here = key
                .as_deref()
                .and_then(|k| node.spread.get(k).copied())
                .unwrap_or(0);
            let zone = match (self.zone_of[i], key.is_some()) {
                (Some(z), true) => in_zones.map_or(0, |c| c[z]),
                _ => here,
            };
            let s = (
                -i64::from(zone),
                -i64::from(here),
                score(&want, node, strategy),
            );
            let better = match best {
                None => true,
                Some((bs, bi)) => s > bs || (s == bs && self.name_rank[i] < self.name_rank[bi]),
            };
            if better {
                best = Some((s, i));
            }
            found += 1;
            if found >= limit {
                self.next = i + 1;
                break;
            }
        }
        match best {
            Some((_, i)) => Ok(i),
            None => Err(explain(pod, &want, &self.nodes)),
        }
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
