//! `signaling-node` binary: serve, client, bench and token subcommands.

fn main() {}
