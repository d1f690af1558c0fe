//! End-to-end tests: each starts `kumo up` (or `kumo server` + `kumo agent`) in a temp dir on a
//! free port and drives it through the CLI and the API, as a user would.

mod harness;

mod access;
mod api;
mod apps;
mod audit;
mod blobs;
mod cli;
mod containers;
mod etcd;
mod exec;
mod failover;
mod layers;
mod leases;
mod limits;
mod migrate;
mod mltask;
mod multinode;
mod multinode_work;
mod node_loss;
mod nodes;
mod podnet;
mod podnet_nodes;
mod pods;
mod rbac;
mod secrets;
mod secrets_at_rest;
mod security;
mod servers;
mod service_accounts;
mod store;
mod tls;
mod tokens;
mod volumes;
