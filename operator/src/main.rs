//! `switchboard-operator` binary.

fn main() {}
