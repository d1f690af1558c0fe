//! End-to-end tests: each starts `kumo up` (or `kumo server` + `kumo agent`) in a temp dir on a
//! free port and drives it through the CLI and the API, as a user would.

mod harness;

mod api;
mod apps;
mod cli;
mod containers;
mod exec;
mod layers;
mod limits;
mod mltask;
mod pods;
mod secrets;
mod secrets_at_rest;
mod security;
mod store;
mod tls;
mod volumes;
